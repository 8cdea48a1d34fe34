"""The attacker: everything the server runs to learn membership."""
