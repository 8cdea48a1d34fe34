"""Membership inference attacks on the model's predictions, registered by name.

``fl_mia.attacker.predictions.settings`` holds the registry (``PREDICTION_ATTACKS``) and each
attack's settings; the attacks live in one module each (``loss_threshold``, ``learned``,
``lira``, ``rmia``, ``label_only``). This package imports nothing, so the config can read the
registry without torch.
"""
