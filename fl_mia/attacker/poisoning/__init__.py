"""What a dishonest server does to the model it sends: poisoners, registered by name in
:mod:`fl_mia.attacker.poisoning.settings` and built by :func:`fl_mia.attacker.poisoning.registry.make_poisoner`."""
