"""Stand-in of Forge main's ``backend/nn/unet.py`` (commit dfdcbab6): the UNet and its attention.

Forge main's file is, in its own words, taken from ComfyUI with changes. Its ``CrossAttention``
(``heads``, ``dim_head``, bias-free ``to_q/to_k/to_v``, ``to_out = Sequential(Linear, Dropout)``,
``forward(x, context=None, value=None, mask=None, transformer_options={})``) and its
``BasicTransformerBlock._forward`` (attn1_patch chain, then ``patches_replace["attn1"]`` by
``(block, block_index)``, else ``self.attn1(n, context=..., value=..., transformer_options=...)``,
then attn1_output_patch) match ComfyUI 0.3.75's ``comfy/ldm/modules/attention.py``, so these
names are the real ComfyUI classes. Differences that do not reach Sloth: Forge main passes
``extra_options`` (with ``n_heads``/``dim_head``) as attn1's ``transformer_options`` and calls
``backend.attention.attention_function``; ComfyUI passes the block's ``transformer_options`` and
calls ``optimized_attention``. ``IntegratedUNet2DConditionModel`` (``input_blocks`` /
``middle_block`` / ``output_blocks``, ``transformer_options["block"]``, ``original_shape``) is
ComfyUI's ``UNetModel``.
"""
from comfy.ldm.modules.attention import BasicTransformerBlock, CrossAttention, SpatialTransformer  # noqa: F401
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel as IntegratedUNet2DConditionModel  # noqa: F401
