"""What a dishonest server does to the model it sends: poisoners, by name."""

from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.attacker.poisoning.registry import POISONERS, make_poisoner

__all__ = ["POISONERS", "Poisoner", "make_poisoner"]
