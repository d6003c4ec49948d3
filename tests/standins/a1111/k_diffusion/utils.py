"""Stand-in for ``k_diffusion/utils.py`` (only ``append_dims``)."""


def append_dims(x, target_dims):
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f'input has {x.ndim} dims but target_dims is {target_dims}, which is less')
    return x[(...,) + (None,) * missing]
