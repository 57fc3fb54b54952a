"""Data: LLaVA-format records, the dataset over them, and the synthetic visual world."""
