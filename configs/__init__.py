"""vtok's presets (``tokenizer/``, ``ar/``) and fine-tune overlays (``finetune/``), installed as ``vtok.configs``.

Only YAML lives here; :mod:`vtok.catalog` finds and reads it with :mod:`importlib.resources`.
"""
