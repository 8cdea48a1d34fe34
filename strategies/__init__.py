"""Server strategies: the honest FedAvg baseline and the poisoning variant of it."""

from strategies.honest import HonestFedAvg, PartitionSeededClientManager

__all__ = ["HonestFedAvg", "PartitionSeededClientManager"]
