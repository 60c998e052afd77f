"""rlprompt: prompt policies learned with reinforcement learning from a frozen target model's feedback."""

__version__ = "0.1.0"
