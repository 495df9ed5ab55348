"""Self-critical sequence training (Rennie et al. 2017, "Self-critical sequence training for image
captioning"), in its form without a greedy baseline (Luo 2020, "A better variant of self-critical
sequence training"): each image's K sampled captions are rewarded by their CIDEr-D against the image's
references, and each one's baseline is the mean reward of its K - 1 siblings. The policy gradient
raises the log-probability of the captions that beat their siblings and lowers the others', so the
decoder learns what the metric rewards (whole captions), not only the next word of a reference.

The reward's idf is fixed by the training references (as the reference implementations fix it to
their training set), so a caption's reward does not depend on the batch it is in.
"""

from __future__ import annotations

import torch

from ...data.caption_tokens import CaptionSpecials
from ...data.tokenizer import pad_ids
from ...heads.generation import sample_search
from ...metrics.captioning import CiderD
from ...models.captioning import CaptioningModel
from .data import IGNORE_INDEX, teacher_forcing_targets


def words(ids: list[int], specials: CaptionSpecials) -> tuple[int, ...]:
    """A caption's word ids: its token ids without BOS and EOS."""
    return tuple(t for t in ids if t not in (specials.bos, specials.eos))


class SelfCritical:
    """The SCST loss of a batch of images with their reference captions (task captioning's batches).
    training_references: each training image's captions as token ids (they fix the reward's idf)."""

    def __init__(self, training_references: list[list[list[int]]], specials: CaptionSpecials, samples: int,
                 max_length: int):
        if samples < 2:
            raise ValueError(f"self-critical training needs at least 2 samples an image, got {samples}")
        self.cider = CiderD([[words(c, specials) for c in captions] for captions in training_references])
        self.specials, self.samples, self.max_length = specials, samples, max_length

    def losses(self, model: CaptioningModel, batch: dict, generator: torch.Generator | None = None
               ) -> dict[str, torch.Tensor]:
        """{"loss": the policy-gradient loss, "reward": the samples' mean CIDEr-D, "sample_words": their
        mean length}."""
        s, k = self.specials, self.samples
        image = model.encode_images(batch.get("images"), batch.get("image_features"))
        references = [[] for _ in range(image.tokens.shape[0])]
        for b, row, mask in zip(batch["image_index"].tolist(), batch["input_ids"], batch["attention_mask"]):
            references[b].append(words(row[mask.bool()].tolist(), s))
        rows = torch.arange(len(references), device=image.tokens.device).repeat_interleave(k)
        drawn = image.index_select(rows)
        was_training = model.decoder.training
        model.decoder.eval()  # the samples come from the policy as it decodes (no dropout)
        sampled = sample_search(model.decoder, drawn, s.bos, s.eos, self.max_length, s.blocked,
                                generator=generator).ids
        model.decoder.train(was_training)

        reward = torch.tensor(self.cider.scores([tuple(ids) for ids in sampled],
                                                [references[b] for b in rows.tolist()])).view(-1, k)
        baseline = (reward.sum(1, keepdim=True) - reward) / (k - 1)  # the mean of the other samples
        advantage = (reward - baseline).flatten().to(image.tokens.device)

        # [BOS] words [EOS]; a caption cut at max_length has no EOS to learn
        sequences = [[s.bos, *ids] + ([s.eos] if len(ids) < self.max_length else []) for ids in sampled]
        ids, mask = pad_ids(sequences)
        inputs, targets = teacher_forcing_targets(ids.to(image.tokens.device), mask.to(image.tokens.device))
        log_probs = model.decoder(drawn, inputs).float().log_softmax(-1)
        real = targets != IGNORE_INDEX
        token_log_probs = log_probs.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * real
        loss = -(advantage[:, None] * token_log_probs).sum() / real.sum()
        return {"loss": loss, "reward": reward.mean(), "sample_words": torch.tensor(
            sum(map(len, sampled)) / len(sampled))}
