"""A local transformers causal LM as the frozen target, batched, with input KV-cache reuse."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import DynamicCache

from rlprompt.models import BUNDLED, load_model
from rlprompt.targets.base import PROMPT, SENTENCE, Target


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class HFTarget(Target):
    """A frozen local causal LM (any name :func:`rlprompt.models.load_model` resolves).

    Scoring tokenizes ``template`` piecewise: everything up to and including ``{sentence}`` is one
    segment, the rest (with the prompt filled in) another, and the token ids are concatenated. With
    an input-first template (``{sentence}`` before ``{prompt}``) the input segment is the same for
    every candidate prompt, so its key/value cache is computed once per batch of inputs and each
    candidate only feeds its own suffix tokens (``kv_reuse=True``); the naive path feeds whole
    sequences and returns the same numbers up to floating-point rounding.
    """

    suffix_rows = 256
    """Rows (inputs x candidate prompts) fed at once when scoring prompt suffixes over a cached input batch."""

    def __init__(
        self,
        model: str = BUNDLED,
        *,
        dtype: str = "bfloat16",
        batch_size: int = 32,
        kv_reuse: bool = True,
        max_sequences: int | None = None,
    ) -> None:
        super().__init__(max_sequences=max_sequences)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = f"hf:{model}:{dtype}"
        self.model, self.tokenizer = load_model(model, dtype=dtype)
        self.batch_size = batch_size
        self.kv_reuse = kv_reuse
        self.pad_id = self.tokenizer.pad_token_id

    @classmethod
    def from_loaded(cls, model, tokenizer, *, batch_size: int = 32, kv_reuse: bool = True, max_sequences: int | None = None) -> "HFTarget":
        """Wrap an already loaded model and tokenizer (tests, or a model shared with a policy)."""
        self = cls.__new__(cls)
        Target.__init__(self, max_sequences=max_sequences)
        self.name = f"hf:{getattr(model.config, 'name_or_path', '') or 'in-memory'}"
        self.model, self.tokenizer = model.eval(), tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.batch_size, self.kv_reuse, self.pad_id = batch_size, kv_reuse, tokenizer.pad_token_id
        return self

    # -- helpers ------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def verbalizer_ids(self, verbalizers: Sequence[str]) -> list[int]:
        """The single token id of each verbalizer; a ``ValueError`` names any that is not one token."""
        ids = []
        for verbalizer in verbalizers:
            tokens = self.encode(verbalizer)
            if len(tokens) != 1:
                pieces = self.tokenizer.convert_ids_to_tokens(tokens)
                raise ValueError(f"verbalizer {verbalizer!r} is not a single token: it tokenizes to {pieces} (ids {tokens})")
            ids.append(tokens[0])
        if len(set(ids)) != len(ids):
            raise ValueError(f"verbalizers {list(verbalizers)!r} share a token id: {ids}")
        return ids

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            if seq:
                ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
        return ids, mask

    def _hidden(self, ids, mask, cache=None, positions=None) -> torch.Tensor:
        """Final hidden states of one forward pass of the base model; ``mask`` covers cached tokens too."""
        if positions is None:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.stats.calls += 1
        self.stats.tokens += int(mask[:, -ids.shape[1]:].sum())
        return self.model.base_model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=cache is not None
        ).last_hidden_state

    def _last_logprobs(self, hidden: torch.Tensor, verbalizer_ids: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the verbalizers at each row's last position. Only that position goes through
        the LM head (a fifth of this model's compute); ``logits_to_keep=1`` measured 2x slower on CPU."""
        logits = self.model.get_output_embeddings()(hidden[:, -1].contiguous()).float()
        return torch.log_softmax(logits, dim=-1)[:, verbalizer_ids]

    # -- scoring ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _classify(self, template: str, prompts: list[str], inputs: list[str], verbalizers: list[str]) -> np.ndarray:
        verbalizer_ids = torch.tensor(self.verbalizer_ids(verbalizers))
        head, tail = template.split(SENTENCE)
        input_first = PROMPT in tail
        out = np.empty((len(prompts), len(inputs), len(verbalizers)))
        if input_first:
            prefixes = [self.encode(head + text) for text in inputs]
            suffixes = [self.encode(tail.replace(PROMPT, prompt)) for prompt in prompts]
            if self.kv_reuse:
                self._classify_reusing_inputs(prefixes, suffixes, verbalizer_ids, out)
                self.stats.sequences += len(prompts) * len(inputs)
                return out
            seqs = [(p, n, prefixes[n] + suffixes[p]) for p in range(len(prompts)) for n in range(len(inputs))]
        else:
            seqs = [
                (p, n, self.encode(head.replace(PROMPT, prompt) + text) + self.encode(tail))
                for p, prompt in enumerate(prompts)
                for n, text in enumerate(inputs)
            ]
        seqs.sort(key=lambda item: len(item[2]))  # similar lengths share a batch: less padding
        for chunk in _chunks(len(seqs), self.batch_size):
            batch = seqs[chunk]
            ids, mask = self._left_pad([s for _, _, s in batch])
            scores = self._last_logprobs(self._hidden(ids, mask), verbalizer_ids).numpy()
            for row, (p, n, _) in enumerate(batch):
                out[p, n] = scores[row]
        self.stats.sequences += len(seqs)
        return out

    def _classify_reusing_inputs(self, prefixes, suffixes, verbalizer_ids, out) -> None:
        """Encode each batch of inputs once, then score groups of candidate suffixes on a copy of its cache.

        A group of ``G`` suffixes is fed as ``B * G`` rows over the input cache repeated ``G`` times.
        """
        order = sorted(range(len(prefixes)), key=lambda n: len(prefixes[n]))  # less padding per batch
        for span in _chunks(len(order), self.batch_size):
            chunk = order[span]
            ids, mask = self._left_pad([prefixes[n] for n in chunk])
            cache = DynamicCache(config=self.model.config)
            prefix_scores = self._last_logprobs(self._hidden(ids, mask, cache), verbalizer_ids)
            lengths, rows = mask.sum(-1), ids.shape[0]
            for p, suffix in enumerate(suffixes):
                if not suffix:  # an empty prompt and nothing after it: the input's own last token decides
                    out[p, chunk] = prefix_scores.numpy()
            scored = [p for p, suffix in enumerate(suffixes) if suffix]
            for group in _chunks(len(scored), max(1, self.suffix_rows // rows)):
                members = scored[group]
                g, width = len(members), max(len(suffixes[p]) for p in members)
                # suffixes are right-aligned: padding sits between the cached input and the suffix, masked
                # out, so every row ends on a real token and only the last position needs logits
                s_ids = torch.full((g, width), self.pad_id, dtype=torch.long)
                s_real = torch.zeros((g, width), dtype=torch.long)
                for j, p in enumerate(members):
                    s_ids[j, width - len(suffixes[p]):] = torch.tensor(suffixes[p])
                    s_real[j, width - len(suffixes[p]):] = 1
                group_cache = copy.deepcopy(cache)
                group_cache.batch_repeat_interleave(g)
                # row b * g + j holds input b with suffix j
                full_mask = torch.cat([mask.repeat_interleave(g, 0), s_real.repeat(rows, 1)], dim=-1)
                positions = lengths.repeat_interleave(g)[:, None] + (s_real.cumsum(-1) - 1).clamp(min=0).repeat(rows, 1)
                hidden = self._hidden(s_ids.repeat(rows, 1), full_mask, group_cache, positions)
                scores = self._last_logprobs(hidden, verbalizer_ids).view(rows, g, -1)
                out[np.ix_(members, chunk)] = scores.permute(1, 0, 2).numpy()

    # -- generation and likelihood ------------------------------------------------------------------
    def _render(self, text: str, chat: bool) -> list[int]:
        if not chat:
            return self.encode(text)
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        return self.encode(rendered)

    @torch.inference_mode()
    def _generate(self, texts, max_new_tokens, temperature, top_p, num_samples, seed, chat) -> list[str]:
        results: list[str] = []
        encoded = [self._render(text, chat) for text in texts]
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)
            for chunk in _chunks(len(encoded), max(1, self.batch_size // num_samples)):
                ids, mask = self._left_pad(encoded[chunk])
                kwargs = {"do_sample": temperature > 0}
                if temperature > 0:
                    kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
                generated = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_samples,
                    pad_token_id=self.pad_id,
                    **kwargs,
                )
                new = generated[:, ids.shape[1]:]
                self.stats.calls += 1
                self.stats.tokens += int(mask.sum()) * num_samples + int((new != self.pad_id).sum())
                results.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        self.stats.sequences += len(results)
        return results

    @torch.inference_mode()
    def _loglikelihood(self, contexts: list[str], continuations: list[str]) -> np.ndarray:
        pairs = [(self.encode(c), self.encode(x)) for c, x in zip(contexts, continuations)]
        for context, (ctx_ids, _) in zip(contexts, pairs):
            if not ctx_ids:
                raise ValueError(f"context {context!r} is empty after tokenization: nothing to condition on")
        out = np.empty(len(pairs))
        for chunk in _chunks(len(pairs), self.batch_size):
            batch = pairs[chunk]
            ids, mask = self._left_pad([c + x for c, x in batch])
            logits = self.model.get_output_embeddings()(self._hidden(ids, mask)[:, :-1]).float()
            logprobs = torch.log_softmax(logits, dim=-1)
            token_lp = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
            for row, (_, cont) in enumerate(batch):
                out[chunk.start + row] = float(token_lp[row, -len(cont):].sum())
        self.stats.sequences += len(pairs)
        return out
