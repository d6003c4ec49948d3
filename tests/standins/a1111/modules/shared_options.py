"""Stand-in for A1111 v1.10.1 ``modules/shared_options.py`` (written from the API, not the real code).

Holds only the settings that the processing/sampling/infotext paths of this
stand-in (and a typical always-on extension) read.  Keys, default values and
``infotext=`` labels are the v1.10.1 ones; UI components are omitted
(``component=None``) because no settings page is built here.
"""
from modules.options import OptionInfo, options_section

options_templates = {}

options_templates.update(options_section(('saving-images', "Saving images/grids", "saving"), {
    "samples_save": OptionInfo(True, "Always save all generated images"),
    "grid_save": OptionInfo(True, "Always save all generated image grids"),
    "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),
    "save_images_before_highres_fix": OptionInfo(False, "Save a copy of image before applying highres fix."),
    "img_max_size_mp": OptionInfo(200, "Maximum image size"),
    "enable_pnginfo": OptionInfo(True, "Write infotext to metadata of the generated image"),
}))

options_templates.update(options_section(('face-restoration', "Face restoration", "postprocessing"), {
    "face_restoration": OptionInfo(False, "Restore faces", infotext='Face restoration'),
    "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model"),
}))

options_templates.update(options_section(('sd', "Stable Diffusion", "sd"), {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", infotext='Model hash'),
    "sd_unet": OptionInfo("Automatic", "SD Unet"),
    "enable_quantization": OptionInfo(False, "Enable quantization in K samplers for sharper and cleaner results. This may change existing seeds"),
    "emphasis": OptionInfo("Original", "Emphasis mode", infotext="Emphasis"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", infotext="Clip skip"),
    "upcast_attn": OptionInfo(False, "Upcast cross attention layer to float32"),
    "randn_source": OptionInfo("GPU", "Random number generator source.", infotext="RNG"),
    "tiling": OptionInfo(False, "Tiling", infotext='Tiling'),
    "hires_fix_refiner_pass": OptionInfo("second pass", "Hires fix: which pass to enable refiner for", infotext="Hires refiner"),
}))

options_templates.update(options_section(('sdxl', "Stable Diffusion XL", "sd"), {
    "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
    "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
}))

options_templates.update(options_section(('vae', "VAE", "sd"), {
    "sd_vae": OptionInfo("Automatic", "SD VAE", infotext='VAE'),
    "sd_vae_encode_method": OptionInfo("Full", "VAE type for encode", infotext='VAE Encoder'),
    "sd_vae_decode_method": OptionInfo("Full", "VAE type for decode", infotext='VAE Decoder'),
}))

options_templates.update(options_section(('img2img', "img2img", "sd"), {
    "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength", infotext='Conditional mask weight'),
    "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img", infotext='Noise multiplier'),
    "img2img_extra_noise": OptionInfo(0.0, "Extra noise multiplier for img2img and hires fix", infotext='Extra noise'),
    "img2img_color_correction": OptionInfo(False, "Apply color correction to img2img results to match original colors."),
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies."),
    "overlay_inpaint": OptionInfo(True, "Overlay original for inpaint"),
}))

options_templates.update(options_section(('optimizations', "Optimizations", "sd"), {
    "cross_attention_optimization": OptionInfo("Automatic", "Cross attention optimization"),
    "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma", infotext='NGMS'),
    "s_min_uncond_all": OptionInfo(False, "Negative Guidance minimum sigma all steps", infotext='NGMS all steps'),
    "token_merging_ratio": OptionInfo(0.0, "Token merging ratio", infotext='Token merging ratio'),
    "token_merging_ratio_img2img": OptionInfo(0.0, "Token merging ratio for img2img"),
    "token_merging_ratio_hr": OptionInfo(0.0, "Token merging ratio for high-res pass", infotext='Token merging ratio hr'),
    "pad_cond_uncond": OptionInfo(False, "Pad prompt/negative prompt", infotext='Pad conds'),
    "pad_cond_uncond_v0": OptionInfo(False, "Pad prompt/negative prompt (v0)", infotext='Pad conds v0'),
    "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
    "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),
    "fp8_storage": OptionInfo("Disable", "FP8 weight"),
    "cache_fp16_weight": OptionInfo(False, "Cache FP16 weight for LoRA"),
}))

options_templates.update(options_section(('compatibility', "Compatibility", "sd"), {
    "auto_backcompat": OptionInfo(True, "Automatic backward compatibility"),
    "use_old_karras_scheduler_sigmas": OptionInfo(False, "Use old karras scheduler sigmas (0.1 to 10)."),
    "no_dpmpp_sde_batch_determinism": OptionInfo(False, "Do not make DPM++ SDE deterministic across different batch sizes."),
    "use_old_hires_fix_width_height": OptionInfo(False, "For hires fix, use width/height sliders to set final resolution rather than first pass (disables Upscale by, Resize width/height to)."),
    "hires_fix_use_firstpass_conds": OptionInfo(False, "For hires fix, calculate conds of second pass using extra networks of first pass."),
    "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines.", infotext="Old prompt editing timelines"),
    "use_downcasted_alpha_bar": OptionInfo(False, "Downcast model alphas_cumprod to fp16 before sampling. For reproducing old seeds.", infotext="Downcast alphas_cumprod"),
    "refiner_switch_by_sample_steps": OptionInfo(False, "Switch to refiner by sampling steps instead of model timesteps. Old behavior for refiner.", infotext="Refiner switch by sampling steps"),
}))

options_templates.update(options_section(('ui', "User interface", "ui"), {
    "return_grid": OptionInfo(True, "Show grid in gallery"),
    "send_seed": OptionInfo(True, "Send seed when sending prompt or image to other interface"),
    "send_size": OptionInfo(True, "Send size when sending prompt or image to another interface"),
    "hide_samplers": OptionInfo([], "Hide samplers in user interface"),
}))

options_templates.update(options_section(('infotext', "Infotext", "ui"), {
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),
    "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext"),
    "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext"),
    "add_user_name_to_info": OptionInfo(False, "Add user name to infotext when authenticated"),
    "add_version_to_infotext": OptionInfo(True, "Add program version to infotext"),
    "disable_weights_auto_swap": OptionInfo(True, "Disregard checkpoint information from pasted infotext"),
    "infotext_skip_pasting": OptionInfo([], "Disregard fields from pasted infotext"),
    "infotext_styles": OptionInfo("Apply if any", "Infer styles from prompts of pasted infotext"),
}))

options_templates.update(options_section(('ui', "Live previews", "ui"), {
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
    "show_progress_grid": OptionInfo(True, "Show previews of all images generated in a batch as a grid"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),
    "show_progress_type": OptionInfo("Approx NN", "Live preview method"),
    "live_preview_content": OptionInfo("Prompt", "Live preview subject"),
    "live_preview_fast_interrupt": OptionInfo(False, "Return image with chosen live preview method on interrupt"),
}))

options_templates.update(options_section(('sampler-params', "Sampler parameters", "sd"), {
    "eta_ddim": OptionInfo(0.0, "Eta for DDIM", infotext='Eta DDIM'),
    "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", infotext='Eta'),
    "ddim_discretize": OptionInfo('uniform', "img2img DDIM discretize"),
    's_churn': OptionInfo(0.0, "sigma churn", infotext='Sigma churn'),
    's_tmin': OptionInfo(0.0, "sigma tmin", infotext='Sigma tmin'),
    's_tmax': OptionInfo(0.0, "sigma tmax", infotext='Sigma tmax'),
    's_noise': OptionInfo(1.0, "sigma noise", infotext='Sigma noise'),
    'sigma_min': OptionInfo(0.0, "sigma min", infotext='Schedule min sigma'),
    'sigma_max': OptionInfo(0.0, "sigma max", infotext='Schedule max sigma'),
    'rho': OptionInfo(0.0, "rho", infotext='Schedule rho'),
    'eta_noise_seed_delta': OptionInfo(0, "Eta noise seed delta", infotext='ENSD'),
    'always_discard_next_to_last_sigma': OptionInfo(False, "Always discard next-to-last sigma", infotext='Discard penultimate sigma'),
    'sgm_noise_multiplier': OptionInfo(False, "SGM noise multiplier", infotext='SGM noise multiplier'),
    'uni_pc_order': OptionInfo(3, "UniPC order", infotext='UniPC order'),
    'sd_noise_schedule': OptionInfo("Default", "Noise schedule for sampling", infotext="Noise Schedule"),
    'skip_early_cond': OptionInfo(0.0, "Ignore negative prompt during early sampling", infotext="Skip Early CFG"),
    'beta_dist_alpha': OptionInfo(0.6, "Beta scheduler - alpha", infotext='Beta scheduler alpha'),
    'beta_dist_beta': OptionInfo(0.6, "Beta scheduler - beta", infotext='Beta scheduler beta'),
}))
