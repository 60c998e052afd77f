"""A local transformers causal LM as the frozen target, batched, with shared-prefix KV-cache reuse."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import DynamicCache

from rlprompt.devices import resolve_device
from rlprompt.errors import ConfigError
from rlprompt.models import BUNDLED, load_model
from rlprompt.targets.base import PROMPT, SENTENCE, Target


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class HFTarget(Target):
    """A frozen local causal LM (any name :func:`rlprompt.models.load_model` resolves).

    Scoring tokenizes ``template`` in two segments whose token ids are concatenated: with an input-first
    template (``{sentence}`` before ``{prompt}``) the cut falls after the input, with a prompt-first one
    (a chat template with the instruction before the input) after the prompt. The first segment is the
    same for every candidate prompt (input-first) or every input (prompt-first), so with ``kv_reuse=True``
    its key/value cache is computed once per batch and only the second segments are fed over it; the
    naive path feeds whole sequences and returns the same numbers up to floating-point rounding.

    ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``; :func:`rlprompt.devices.resolve_device`) holds the model;
    inputs are built on the CPU and moved once per forward pass, scores stay on the device until the whole call
    is done. Batch sizes default per device: 32 sequences on the CPU, 512 on CUDA, where a call scores thousands.
    """

    suffix_rows = 256
    """Most rows (prefixes x suffixes) fed at once over a cached prefix batch on the CPU (x16 on CUDA)."""
    suffix_tokens = 4096
    """Most padded suffix tokens fed at once on the CPU (rows x the group's longest suffix; x16 on CUDA)."""

    def __init__(
        self,
        model: str = BUNDLED,
        *,
        dtype: str = "bfloat16",
        device: str = "cpu",
        batch_size: int | None = None,
        kv_reuse: bool = True,
        max_sequences: int | None = None,
    ) -> None:
        super().__init__(max_sequences=max_sequences)
        self.device = resolve_device(device)
        self.name = f"hf:{model}:{dtype}"
        self.model, self.tokenizer = load_model(model, dtype=dtype, device=self.device)
        self._configure(batch_size, kv_reuse)

    @classmethod
    def from_loaded(cls, model, tokenizer, *, batch_size: int | None = None, kv_reuse: bool = True,
                    max_sequences: int | None = None) -> "HFTarget":
        """Wrap an already loaded model and tokenizer (tests, or a model shared with a policy), on the model's device."""
        self = cls.__new__(cls)
        Target.__init__(self, max_sequences=max_sequences)
        self.name = f"hf:{getattr(model.config, 'name_or_path', '') or 'in-memory'}"
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = next(model.parameters()).device
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._configure(batch_size, kv_reuse)
        return self

    def _configure(self, batch_size: int | None, kv_reuse: bool) -> None:
        scale = 1 if self.device.type == "cpu" else 16
        batch_size = 32 * scale if batch_size is None else batch_size
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.kv_reuse, self.pad_id = batch_size, kv_reuse, self.tokenizer.pad_token_id
        self.suffix_rows, self.suffix_tokens = type(self).suffix_rows * scale, type(self).suffix_tokens * scale

    # -- helpers ------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def verbalizer_ids(self, verbalizers: Sequence[str]) -> list[int]:
        """The single token id of each verbalizer; a :class:`~rlprompt.errors.ConfigError` names any that is not one
        token."""
        ids = []
        for verbalizer in verbalizers:
            tokens = self.encode(verbalizer)
            if len(tokens) != 1:
                pieces = self.tokenizer.convert_ids_to_tokens(tokens)
                raise ConfigError(f"verbalizer {verbalizer!r} is not a single token: it tokenizes to {pieces} (ids {tokens})")
            ids.append(tokens[0])
        if len(set(ids)) != len(ids):
            raise ConfigError(f"verbalizers {list(verbalizers)!r} share a token id: {ids}")
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
        """Final hidden states (on the device) of one forward pass of the base model over CPU-built ``ids`` and
        ``mask`` (``mask`` covers cached tokens too); the inputs move to the device here, once."""
        if positions is None:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.stats.calls += 1
        self.stats.tokens += int(mask[:, -ids.shape[1]:].sum())
        to = self.device
        return self.model.base_model(
            input_ids=ids.to(to), attention_mask=mask.to(to), position_ids=positions.to(to), cache=cache,
            use_cache=cache is not None,
        ).last_hidden_state

    def _last_logprobs(self, hidden: torch.Tensor, verbalizer_ids: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the verbalizers at each row's last position. Only that position goes through
        the LM head (a fifth of this model's compute); ``logits_to_keep=1`` measured 2x slower on CPU."""
        logits = self.model.get_output_embeddings()(hidden[:, -1].contiguous()).float()
        return torch.log_softmax(logits, dim=-1)[:, verbalizer_ids]

    # -- scoring ------------------------------------------------------------------------------------
    def _segments(self, template: str, prompts: list[str], inputs: list[str]) -> tuple[list[list[int]], list[list[int]], bool]:
        """Token ids of the part of each sequence shared by one input (input-first template) or by one
        prompt (prompt-first), then of the part that varies with the other, and whether the input comes first.

        Sequence ``(p, n)`` is the concatenation of its two segments, tokenized apart: the cut falls after
        the input (input-first) or after the prompt (prompt-first), where a BPE merge across it is rare.
        """
        head, tail = template.split(SENTENCE)
        if PROMPT in tail:
            return ([self.encode(head + text) for text in inputs],
                    [self.encode(tail.replace(PROMPT, prompt)) for prompt in prompts], True)
        before, between = head.split(PROMPT)
        tail_ids = self.encode(tail)
        return ([self.encode(before + prompt) for prompt in prompts],
                [self.encode(between + text) + tail_ids for text in inputs], False)

    def _classify(self, template: str, prompts: list[str], inputs: list[str], verbalizers: list[str]) -> np.ndarray:
        return self.classify_on_device(template, prompts, inputs, verbalizers).cpu().numpy().astype(np.float64)

    @torch.inference_mode()
    def classify_on_device(self, template: str, prompts: list[str], inputs: list[str],
                           verbalizers: list[str]) -> torch.Tensor:
        """:meth:`classify`'s log-probabilities ``(P, N, K)`` as a float32 tensor left on the target's device
        (no budget or input checks: call :meth:`classify` for those)."""
        verbalizer_ids = torch.tensor(self.verbalizer_ids(verbalizers), device=self.device)
        prefixes, suffixes, input_first = self._segments(template, prompts, inputs)
        scores = torch.empty((len(prefixes), len(suffixes), len(verbalizers)), device=self.device)
        if self.kv_reuse:
            self._score_over_cached_prefixes(prefixes, suffixes, verbalizer_ids, scores)
        else:
            self._score_whole(range(len(prefixes)), prefixes, suffixes, verbalizer_ids, scores)
        self.stats.sequences += len(prompts) * len(inputs)
        return scores.transpose(0, 1) if input_first else scores

    def _score_whole(self, rows, prefixes, suffixes, verbalizer_ids, out) -> None:
        """Fill ``out[a, b]`` for every prefix ``a`` in ``rows`` and every suffix ``b`` by feeding whole sequences."""
        seqs = sorted(((a, b) for a in rows for b in range(len(suffixes))),
                      key=lambda ab: len(prefixes[ab[0]]) + len(suffixes[ab[1]]))  # less padding per batch
        for chunk in _chunks(len(seqs), self.batch_size):
            batch = seqs[chunk]
            ids, mask = self._left_pad([prefixes[a] + suffixes[b] for a, b in batch])
            a_idx, b_idx = (torch.tensor(col, device=self.device) for col in zip(*batch))
            out[a_idx, b_idx] = self._last_logprobs(self._hidden(ids, mask), verbalizer_ids)

    def _score_over_cached_prefixes(self, prefixes, suffixes, verbalizer_ids, out) -> None:
        """Fill ``out[prefix, suffix]`` for every concatenation: each batch of prefixes is encoded once, then
        groups of suffixes are scored on a copy of its cache (a batch of empty prefixes has nothing to cache:
        its sequences are fed whole).

        A group of ``G`` suffixes is fed as ``B * G`` rows over the prefix cache repeated ``G`` times.
        """
        order = sorted(range(len(prefixes)), key=lambda n: len(prefixes[n]))  # less padding per batch
        # an empty suffix: the prefix's own last token decides; the others in length order (less padding)
        scored = sorted((s for s, suffix in enumerate(suffixes) if suffix), key=lambda s: len(suffixes[s]))
        empty = [s for s, suffix in enumerate(suffixes) if not suffix]
        for span in _chunks(len(order), self.batch_size):
            chunk = order[span]
            if not any(prefixes[n] for n in chunk):
                self._score_whole(chunk, prefixes, suffixes, verbalizer_ids, out)
                continue
            ids, mask = self._left_pad([prefixes[n] for n in chunk])
            cache = DynamicCache(config=self.model.config)
            prefix_scores = self._last_logprobs(self._hidden(ids, mask, cache), verbalizer_ids)
            lengths, rows = mask.sum(-1), ids.shape[0]
            chunk_idx = torch.tensor(chunk, device=self.device)
            for s in empty:
                out[chunk_idx, s] = prefix_scores
            for members in self._suffix_groups([len(suffixes[s]) for s in scored], scored, rows):
                g, width = len(members), len(suffixes[members[-1]])
                # suffixes are right-aligned: padding sits between the cached prefix and the suffix, masked
                # out, so every row ends on a real token and only the last position needs logits
                s_ids = torch.full((g, width), self.pad_id, dtype=torch.long)
                s_real = torch.zeros((g, width), dtype=torch.long)
                for j, s in enumerate(members):
                    s_ids[j, width - len(suffixes[s]):] = torch.tensor(suffixes[s])
                    s_real[j, width - len(suffixes[s]):] = 1
                group_cache = copy.deepcopy(cache)
                group_cache.batch_repeat_interleave(g)
                # row b * g + j holds prefix b with suffix j
                full_mask = torch.cat([mask.repeat_interleave(g, 0), s_real.repeat(rows, 1)], dim=-1)
                positions = lengths.repeat_interleave(g)[:, None] + (s_real.cumsum(-1) - 1).clamp(min=0).repeat(rows, 1)
                hidden = self._hidden(s_ids.repeat(rows, 1), full_mask, group_cache, positions)
                scores = self._last_logprobs(hidden, verbalizer_ids).view(rows, g, -1)
                out[chunk_idx[:, None], torch.tensor(members, device=self.device)[None, :]] = scores

    def _suffix_groups(self, lengths: list[int], items: list[int], rows: int) -> Iterator[list[int]]:
        """Consecutive groups of ``items`` (sorted by their ``lengths``, ascending) of at most ``suffix_rows``
        rows and ``suffix_tokens`` padded tokens each, so that a group pads to a similar length."""
        group: list[int] = []
        for item, length in zip(items, lengths):
            if group and ((len(group) + 1) * rows > self.suffix_rows or (len(group) + 1) * rows * length > self.suffix_tokens):
                yield group
                group = []
            group.append(item)
        if group:
            yield group

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
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_samples,
                    pad_token_id=self.pad_id,
                    **kwargs,
                )
                new = generated[:, ids.shape[1]:].cpu()
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
            token_lp = logprobs.gather(-1, ids[:, 1:, None].to(self.device))[..., 0].cpu()
            for row, (_, cont) in enumerate(batch):
                out[chunk.start + row] = float(token_lp[row, -len(cont):].sum())
        self.stats.sequences += len(pairs)
        return out
