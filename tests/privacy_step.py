"""The server's privacy step as server/federation.py runs it: the attacker scores, the referee judges."""

from __future__ import annotations

from server.federation import draw_candidates, make_referee, make_server_attacker


class PrivacyStep:
    def __init__(self, cfg, run_dir) -> None:
        self.candidates, self.ledger = draw_candidates(cfg)
        self.attacker = make_server_attacker(cfg, self.candidates, run_dir)
        self.referee = make_referee(cfg, self.candidates, self.ledger, run_dir)
        self.model = self.attacker.model
        self.knowledge = self.attacker.knowledge

    def observe_round(self, server_round, weights) -> None:
        self.attacker.observe_round(server_round, weights)

    def finish(self, weights) -> dict:
        scores = self.attacker.finish(weights)
        return self.referee.judge(
            scores, population_images=len(self.knowledge.population), shadows=self.attacker.shadows
        )
