"""The Flower ClientApp: one hospital, translating Flower messages into fl_mia calls."""
