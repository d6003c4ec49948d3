"""Stand-in for A1111 v1.10.1 ``modules/prompt_parser.py`` (written from the API, not the real code).

Kept exactly (these shape the batch the CFG denoiser builds):

* ``ScheduledPromptConditioning(end_at_step, cond)``, ``SdConditioning``,
  ``ComposableScheduledPromptConditioning(schedules, weight)``,
  ``MulticondLearnedConditioning(shape, batch)``, ``DictWithShape``;
* ``get_multicond_prompt_list`` -- ``AND`` splitting and ``:weight`` suffixes,
  identical sub-prompts share one flat index;
* ``reconstruct_cond_batch`` / ``reconstruct_multicond_batch`` / ``stack_conds`` --
  the per-step selection and the ``conds_list`` of ``(flat_row, weight)`` pairs,
  including the dict (SDXL) layout.

Simplified:

* **No prompt editing / alternation** (``[a:b:N]``, ``[a|b]``): every prompt has a
  single schedule entry ``ScheduledPromptConditioning(end_at_step=steps, cond)``.
* ``get_learned_conditioning`` calls ``model.get_learned_conditioning(texts)`` with an
  ``SdConditioning`` of prompt texts; the tiny test model turns text into a
  deterministic tensor (see ``standin_sd_model.py``) instead of running CLIP.
* ``parse_prompt_attention`` is a compact re-implementation used only by the
  infotext parser to decide whether a prompt uses emphasis.
"""
from __future__ import annotations

import re
from collections import namedtuple

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class SdConditioning(list):
    """A list of prompts that also carries image size and whether it is a negative prompt."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, 'is_negative_prompt', False)
        self.width = width or getattr(copy_from, 'width', None)
        self.height = height or getattr(copy_from, 'height', None)


def get_learned_conditioning(model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False):
    result = []
    cache = {}
    for prompt in prompts:
        if prompt in cache:
            result.append(cache[prompt])
            continue
        conds = model.get_learned_conditioning(SdConditioning([prompt], copy_from=prompts))
        cond = {k: v[0] for k, v in conds.items()} if isinstance(conds, dict) else conds[0]
        schedule = [ScheduledPromptConditioning(steps, cond)]
        cache[prompt] = schedule
        result.append(schedule)
    return result


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts: SdConditioning | list[str]):
    res_indexes = []
    prompt_indexes = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()

    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, 1.0)
            weight = float(weight) if weight is not None else 1.0

            index = prompt_indexes.get(text)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)

    return res_indexes, prompt_flat_list, prompt_indexes


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape: tuple = shape
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False) -> MulticondLearnedConditioning:
    res_indexes, flat, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, flat, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in indexes] for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


def multicond_from_tensors(per_image, steps=1000):
    """Test helper (not in the WebUI): build a ``MulticondLearnedConditioning`` from
    ``per_image = [[(cond, weight), ...], ...]`` where ``cond`` is a ``(tokens, dim)``
    tensor or an SDXL dict ``{"crossattn": (tokens, dim), "vector": (adm,)}``."""
    batch = [[ComposableScheduledPromptConditioning([ScheduledPromptConditioning(steps, c)], w) for c, w in image]
             for image in per_image]
    return MulticondLearnedConditioning(shape=(len(per_image),), batch=batch)


def learned_from_tensors(per_image, steps=1000):
    """Test helper (not in the WebUI): the uncond counterpart, ``[[ScheduledPromptConditioning]]``."""
    return [[ScheduledPromptConditioning(steps, c)] for c in per_image]


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def _pick(schedules, current_step):
    for i, entry in enumerate(schedules):
        if current_step <= entry.end_at_step:
            return i
    return 0


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    first = c[0][0].cond
    is_dict = isinstance(first, dict)
    if is_dict:
        res = {k: torch.zeros((len(c),) + v.shape, device=v.device, dtype=v.dtype) for k, v in first.items()}
        res = DictWithShape(res, (len(c),) + first['crossattn'].shape)
    else:
        res = torch.zeros((len(c),) + first.shape, device=first.device, dtype=first.dtype)

    for i, schedule in enumerate(c):
        chosen = schedule[_pick(schedule, current_step)].cond
        if is_dict:
            for k, v in chosen.items():
                res[k][i] = v
        else:
            res[i] = chosen
    return res


def stack_conds(tensors):
    token_count = max(t.shape[0] for t in tensors)
    for i in range(len(tensors)):
        if tensors[i].shape[0] != token_count:
            last = tensors[i][-1:]
            tensors[i] = torch.vstack([tensors[i], last.repeat([token_count - tensors[i].shape[0], 1])])
    return torch.stack(tensors)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    param = c.batch[0][0].schedules[0].cond
    tensors = []
    conds_list = []
    for composable_prompts in c.batch:
        for_image = []
        for composable in composable_prompts:
            chosen = composable.schedules[_pick(composable.schedules, current_step)].cond
            for_image.append((len(tensors), composable.weight))
            tensors.append(chosen)
        conds_list.append(for_image)

    if isinstance(tensors[0], dict):
        stacked = {k: stack_conds([t[k] for t in tensors]) for k in tensors[0].keys()}
        stacked = DictWithShape(stacked, stacked['crossattn'].shape)
    else:
        stacked = stack_conds(tensors).to(device=param.device, dtype=param.dtype)
    return conds_list, stacked


_attention_token = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    """Return ``[[text, weight], ...]`` for ``(a)`` x1.1, ``[a]`` /1.1, ``(a:w)``, escapes and BREAK."""
    out = []
    open_round = []
    open_square = []

    def scale_from(start, factor):
        for item in out[start:]:
            item[1] *= factor

    for m in _attention_token.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith('\\'):
            out.append([tok[1:], 1.0])
        elif tok == '(':
            open_round.append(len(out))
        elif tok == '[':
            open_square.append(len(out))
        elif weight is not None and open_round:
            scale_from(open_round.pop(), float(weight))
        elif tok == ')' and open_round:
            scale_from(open_round.pop(), 1.1)
        elif tok == ']' and open_square:
            scale_from(open_square.pop(), 1 / 1.1)
        else:
            pieces = _break.split(tok)
            for i, piece in enumerate(pieces):
                if i > 0:
                    out.append(["BREAK", -1])
                out.append([piece, 1.0])

    for pos in open_round:
        scale_from(pos, 1.1)
    for pos in open_square:
        scale_from(pos, 1 / 1.1)

    if not out:
        out = [["", 1.0]]

    merged = [out[0]]
    for item in out[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged
