"""What a dishonest server does to the model it sends: poisoners, by name."""

from fl_mia.poisoning.base import PoisoningKnowledge, Poisoner
from fl_mia.poisoning.registry import POISONERS, make_poisoner

__all__ = ["PoisoningKnowledge", "POISONERS", "Poisoner", "make_poisoner"]
