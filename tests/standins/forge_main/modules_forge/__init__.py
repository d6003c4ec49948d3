"""Stand-in of Forge main's ``modules_forge`` package: present, so backend detection sees Forge main
(``backend`` and ``modules_forge`` importable, ``ldm_patched`` not). Nothing in it is used."""
