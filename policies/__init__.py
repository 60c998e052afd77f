"""Prompt policies, one module per method (import the module you need):

* :mod:`rlprompt.policies.rlprompt`: RLPrompt's token-by-token policy trained with PPO (Deng et al. 2022).
* :mod:`rlprompt.policies.multiprompter`: MultiPrompter's cooperative agents with a centralized critic (Kim et al. 2023).
* :mod:`rlprompt.policies.prewrite`: PRewrite's rewriter LM trained with GRPO (Kong et al. 2024).
* :mod:`rlprompt.policies.dpo`: DPO and Sem-DPO for rewriters (Rafailov et al. 2023; Mohamed et al. 2025); their
  preference pairs are built by :mod:`rlprompt.policies.preferences`.
* :mod:`rlprompt.policies.rewriter`: the LoRA instruction rewriter PRewrite and DPO share (config fields, chat
  template, run setup).
* :mod:`rlprompt.policies.promptagent`: PromptAgent's Monte Carlo tree search over prompt edits (Wang et al. 2023).
"""
