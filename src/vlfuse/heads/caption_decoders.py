"""Caption decoders: image Features in, next-token logits out.

Both speak one interface, which teacher forcing and the search in `heads.generation` use:

  forward(image, input_ids [B, L]) -> logits [B, L, V]   position t predicts token t + 1
  start(image) -> state                                  a dict of tensors, batch first
  step(state, tokens [B, t]) -> (logits [B, V], state)   the next token after the prefix `tokens`
                                                         (one token longer than at the previous step)
  select(state, index [B']) -> state                     rows `index` (beams: expand, reorder)

Image padding (Features.mask False) never changes the logits: padded image tokens get zero
attention weight, and the LSTM's initial state is a masked mean.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.attention import AdditiveAttention, MultiHeadAttention, scaled_dot_product_attention
from ..layers.transformer import FeedForward
from ..types import Features, masked_mean

State = dict[str, torch.Tensor]


def select_state(state: State, index: torch.Tensor) -> State:
    return {k: v.index_select(0, index) for k, v in state.items()}


def causal_bias(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[L, L] additive mask: position i may read positions <= i only."""
    future = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(length, length, device=device, dtype=dtype).masked_fill(future, float("-inf"))


class DecoderBlock(nn.Module):
    """Pre-norm decoder layer (Vaswani et al. 2017): causal self-attention, cross-attention to the
    image tokens (padding masked), feed-forward; each a residual branch."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ffn = (nn.LayerNorm(dim) for _ in range(3))
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.ffn = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
                ) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, bias=causal)[0]
        x = x + self.cross_attn(self.norm_cross(x), memory, memory, memory_mask)[0]
        return x + self.ffn(self.norm_ffn(x))

    def memory_keys(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image tokens' cross-attention keys and values [B, heads, M, d], computed once per caption."""
        attn = self.cross_attn
        return attn._split(attn.k_proj(memory)), attn._split(attn.v_proj(memory))

    def step(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, memory_keys: torch.Tensor,
             memory_values: torch.Tensor, memory_mask: torch.Tensor):
        """The newest token x [B, 1, D] with the earlier tokens' self-attention keys / values cached:
        the same result as `forward` at that position. Returns (x, keys, values) with its own appended."""
        attn, h = self.self_attn, self.norm_self(x)
        keys = torch.cat([keys, attn._split(attn.k_proj(h))], 2)
        values = torch.cat([values, attn._split(attn.v_proj(h))], 2)
        out, _ = scaled_dot_product_attention(attn._split(attn.q_proj(h)), keys, values)  # every key is the past
        x = x + attn.out_proj(out.transpose(1, 2).reshape(x.shape))
        cross = self.cross_attn
        out, _ = scaled_dot_product_attention(cross._split(cross.q_proj(self.norm_cross(x))), memory_keys,
                                              memory_values, memory_mask)
        x = x + cross.out_proj(out.transpose(1, 2).reshape(x.shape))
        return x + self.ffn(self.norm_ffn(x)), keys, values


class TransformerCaptionDecoder(nn.Module):
    """Transformer decoder over words, reading the image tokens by cross-attention in every layer.

    Learned positions up to `max_length` tokens (BOS included); `tie_embeddings` shares the word
    embedding with the output projection (Press & Wolf 2017), which helps on small caption sets.
    Word embeddings start at std dim^-0.5 and are scaled by sqrt(dim) on input (Vaswani et al.), so
    tied output logits start near unit scale. Decoding caches each layer's keys and values: a step
    costs one token's work, not the whole prefix's.
    """

    def __init__(self, dim: int, vocab_size: int, max_length: int = 64, layers: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.1, tie_embeddings: bool = True):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.max_length, self.scale = max_length, dim ** 0.5
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=dim ** -0.5)
        self.position = nn.Embedding(max_length, dim)
        self.dropout = nn.Dropout(dropout)
        self.memory_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab_size)
        if tie_embeddings:
            self.out.weight = self.embed.weight

    def hidden(self, memory: torch.Tensor, memory_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"{length} tokens but the decoder has positions for {self.max_length}")
        x = self._embed(input_ids, 0)
        causal = causal_bias(length, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, causal, memory, memory_mask)
        return self.norm(x)

    def _embed(self, input_ids: torch.Tensor, first_position: int) -> torch.Tensor:
        positions = torch.arange(first_position, first_position + input_ids.shape[1], device=input_ids.device)
        return self.dropout(self.scale * self.embed(input_ids) + self.position(positions))

    def forward(self, image: Features, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(self.memory_norm(image.tokens), image.mask, input_ids))

    def start(self, image: Features) -> State:
        memory = self.memory_norm(image.tokens)
        state = {"memory_mask": image.mask}
        for i, block in enumerate(self.blocks):
            state[f"memory_keys{i}"], state[f"memory_values{i}"] = block.memory_keys(memory)
            empty = state[f"memory_keys{i}"][:, :, :0]
            state[f"keys{i}"], state[f"values{i}"] = empty, empty
        return state

    def step(self, state: State, tokens: torch.Tensor) -> tuple[torch.Tensor, State]:
        """The next token's logits after `tokens` [B, t]; the state caches the first t - 1 tokens."""
        done = state["keys0"].shape[2]
        if tokens.shape[1] != done + 1:
            raise ValueError(f"step expects the {done} cached tokens plus one new one, got {tokens.shape[1]} tokens")
        if tokens.shape[1] > self.max_length:
            raise ValueError(f"{tokens.shape[1]} tokens but the decoder has positions for {self.max_length}")
        x, state = self._embed(tokens[:, -1:], done), dict(state)
        for i, block in enumerate(self.blocks):
            x, state[f"keys{i}"], state[f"values{i}"] = block.step(
                x, state[f"keys{i}"], state[f"values{i}"], state[f"memory_keys{i}"], state[f"memory_values{i}"],
                state["memory_mask"])
        return self.out(self.norm(x[:, 0])), state

    select = staticmethod(select_state)


class LSTMAttentionDecoder(nn.Module):
    """Show, Attend and Tell (Xu et al. 2015): an LSTM that attends over the image tokens at each word.

    h_0, c_0 = tanh(W mean(image tokens)); at step t, additive attention with query h_{t-1} gives the
    context z_t, scaled by the gate beta = sigmoid(W_b h_{t-1}); the LSTM reads [E y_{t-1}; beta z_t];
    logits = L_o(E y_{t-1} + L_h h_t + L_z z_t) (the paper's deep output). `layers` > 1 stacks LSTM
    cells; the top one's state is the attention query and the output.
    """

    def __init__(self, dim: int, vocab_size: int, hidden: int | None = None, layers: int = 1,
                 attention_dim: int | None = None, dropout: float = 0.3, gate: bool = True):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        hidden = hidden or dim
        self.layers, self.hidden_size = layers, hidden
        self.embed = nn.Embedding(vocab_size, dim)
        self.init_h = nn.Linear(dim, layers * hidden)
        self.init_c = nn.Linear(dim, layers * hidden)
        self.attention = AdditiveAttention(hidden, dim, attention_dim or hidden)
        self.gate = nn.Linear(hidden, dim) if gate else None
        self.cells = nn.ModuleList(nn.LSTMCell(2 * dim if i == 0 else hidden, hidden) for i in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.out_h = nn.Linear(hidden, dim)
        self.out_z = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, vocab_size)

    def start(self, image: Features) -> State:
        mean = masked_mean(image.tokens, image.mask)
        shape = (len(mean), self.layers, self.hidden_size)
        return {"memory": image.tokens, "memory_mask": image.mask,
                "h": torch.tanh(self.init_h(mean)).view(shape), "c": torch.tanh(self.init_c(mean)).view(shape)}

    def _advance(self, state: State, token: torch.Tensor) -> tuple[torch.Tensor, State]:
        """One word: token [B] -> (logits [B, V], the state after it)."""
        memory, mask, h, c = state["memory"], state["memory_mask"], state["h"], state["c"]
        word = self.embed(token)
        context, _ = self.attention(h[:, -1], memory, memory, mask)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(h[:, -1])) * context
        x, new_h, new_c = torch.cat([word, context], -1), [], []
        for i, cell in enumerate(self.cells):
            h_i, c_i = cell(x, (h[:, i], c[:, i]))
            new_h.append(h_i)
            new_c.append(c_i)
            x = self.dropout(h_i)
        logits = self.out(self.dropout(word + self.out_h(x) + self.out_z(context)))
        return logits, {"memory": memory, "memory_mask": mask, "h": torch.stack(new_h, 1), "c": torch.stack(new_c, 1)}

    def forward(self, image: Features, input_ids: torch.Tensor) -> torch.Tensor:
        state, logits = self.start(image), []
        for t in range(input_ids.shape[1]):
            step_logits, state = self._advance(state, input_ids[:, t])
            logits.append(step_logits)
        return torch.stack(logits, 1)

    def step(self, state: State, tokens: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self._advance(state, tokens[:, -1])

    select = staticmethod(select_state)


DECODERS: dict[str, type[nn.Module]] = {"transformer": TransformerCaptionDecoder, "lstm": LSTMAttentionDecoder}
