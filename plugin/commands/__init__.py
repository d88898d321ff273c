"""Sub-commands of ``borderphase``; each module registers itself with ``add_parser``."""
