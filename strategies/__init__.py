"""Server strategies: the honest FedAvg baseline (and, later, malicious variants of it)."""

from strategies.honest import HonestFedAvg, PartitionSeededClientManager, RoundObserver

__all__ = ["HonestFedAvg", "PartitionSeededClientManager", "RoundObserver"]
