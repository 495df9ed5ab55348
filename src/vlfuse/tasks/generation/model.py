"""Text -> image in two parts (DALL-E's recipe at toy scale): a VQ-VAE that turns a 64 px image into a
grid of discrete codes and back, and a Transformer prior that writes the grid one code at a time
(raster order), reading the caption's tokens by cross-attention.

Why this and not diffusion on 2 CPU cores: the VQ-VAE learns these flat-colour scenes in a few hundred
steps; the prior then trains on a 16x16 grid (256 tokens) with plain cross-entropy, and sampling is 256
cheap steps with a key/value cache, where a diffusion model needs many denoising passes of a U-Net at
full resolution for every image, in training and at sampling alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...layers.transformer import TransformerBlock


# --------------------------------------------------------------------------- VQ-VAE

class Quantizer(nn.Module):
    """Nearest-code quantisation with an exponential-moving-average codebook (van den Oord et al. 2017,
    appendix; Razavi et al. 2019) and restarts of codes no batch has used for a while, so the whole
    codebook stays in use. Gradients pass straight through to the encoder."""

    def __init__(self, codes: int, dim: int, decay: float = 0.95):
        super().__init__()
        self.decay = decay
        self.register_buffer("codebook", torch.randn(codes, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))  # codebook drawn from real encodings

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code index of each vector of z [N, D] (in float32: bf16 distances would tie near codes)."""
        with torch.autocast(z.device.type, enabled=False):
            return self._distance(z.float()).argmin(1)

    def _distance(self, z: torch.Tensor) -> torch.Tensor:
        return z.pow(2).sum(1, keepdim=True) - 2 * z @ self.codebook.T + self.codebook.pow(2).sum(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, D, H, W] -> (quantised with straight-through gradient, codes [B, H, W], commitment loss)."""
        b, d, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):  # the codebook's sums stay float32
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
            codes = self.nearest(flat)
            quantised = self.codebook[codes]
            if self.training:
                self._update(flat.detach(), codes)
            commitment = F.mse_loss(flat, quantised.detach())
            quantised = flat + (quantised - flat).detach()
        return quantised.view(b, h, w, d).permute(0, 3, 1, 2), codes.view(b, h, w), commitment

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        if not self.started:  # start every code at an encoding of the first batch: none starts unused
            self._restart(torch.ones_like(self.ema_count, dtype=torch.bool), flat)
            self.started.fill_(True)
            return
        onehot = F.one_hot(codes, len(self.codebook)).type_as(flat)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + len(self.codebook) * 1e-5) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / count[:, None])
        self._restart(self.ema_count < 1e-2, flat)

    def _restart(self, dead: torch.Tensor, flat: torch.Tensor) -> None:
        """Move the `dead` (unused) codes onto random encoder outputs of this batch."""
        if dead.any():
            picks = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
            self.codebook[dead] = picks
            self.ema_sum[dead] = picks
            self.ema_count[dead] = 1.0


class VQVAE(nn.Module):
    """images [B, 3, S, S] in [0, 1] <-> codes [B, S/f, S/f], f = 2 ** downsample.

    Patch-wise (as ViT-VQGAN reads an image): each f x f patch becomes one vector in one strided
    convolution, and the decoder paints each patch back in one transposed convolution; the 3x3
    convolutions between work on the code grid, so a patch is read and painted knowing its
    neighbours. Nothing runs at full resolution, which keeps a step cheap on a CPU.

    With `palette=P` the decoder paints each pixel as one of P colours (ImageGPT's k-means colour
    clusters; `fit_palette` finds them in the training images) and learns by cross-entropy: edges come
    out sharp, where a regression to RGB blurs them, and flat colours stay exact. Without, it paints
    RGB and learns by mean squared error.
    """

    def __init__(self, codes: int = 512, code_dim: int = 32, channels: int = 128, downsample: int = 3,
                 palette: int = 0):
        super().__init__()
        f = 2 ** downsample
        self.encoder = nn.Sequential(nn.Conv2d(3, channels, f, f), nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1),
                                     nn.ReLU(), nn.Conv2d(channels, code_dim, 1))
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, channels, 3, 1, 1), nn.ReLU(),
                                     nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
                                     nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(channels, palette or 3, f, f))
        self.quantizer = Quantizer(codes, code_dim)
        if palette:
            self.register_buffer("palette", torch.rand(palette, 3))  # RGB in [0, 1]; set by fit_palette

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Code grid [B, h, w] (long) of images [B, 3, S, S] in [0, 1]."""
        z = self.encoder(images * 2 - 1).float()
        b, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)

    def _paint(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's output -> images [B, 3, S, S] in [0, 1]."""
        if hasattr(self, "palette"):
            return self.palette[out.argmax(1)].permute(0, 3, 1, 2)
        return ((out + 1) / 2).clamp(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] from a code grid [B, h, w]."""
        z = self.quantizer.codebook[codes].permute(0, 3, 1, 2)
        return self._paint(self.decoder(z).float())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"reconstruction" (the loss), "mse" (of the painted images), "commitment", "codes", "images"}."""
        quantised, codes, commitment = self.quantizer(self.encoder(images * 2 - 1))
        out = self.decoder(quantised).float()
        if hasattr(self, "palette"):
            loss = F.cross_entropy(out, nearest_colour(images, self.palette))
            painted = self._paint(out.detach())
        else:
            painted = (out + 1) / 2
            loss = F.mse_loss(painted, images)
        return {"reconstruction": loss, "mse": F.mse_loss(painted.detach(), images), "commitment": commitment,
                "codes": codes, "images": painted}


def nearest_colour(images: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Index [B, S, S] of the palette colour [P, 3] nearest each pixel of images [B, 3, S, S]."""
    return torch.cdist(images.permute(0, 2, 3, 1).reshape(-1, 3), palette).argmin(1).view(
        images.shape[0], *images.shape[2:])


@torch.no_grad()
def fit_palette(images: torch.Tensor, colours: int, seed: int = 0, iterations: int = 20,
                max_pixels: int = 1_000_000) -> torch.Tensor:
    """ImageGPT's palette: `colours` k-means centres [colours, 3] (RGB in [0, 1]) of the pixels of uint8
    images [N, 3, S, S] (a random max_pixels of them), k-means++ started. With fewer distinct colours
    than asked for, each distinct colour is a centre and the rest repeat the most common one."""
    generator = torch.Generator().manual_seed(seed)
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)
    if len(pixels) > max_pixels:
        pixels = pixels[torch.randperm(len(pixels), generator=generator)[:max_pixels]]
    distinct, counts = pixels.unique(dim=0, return_counts=True)  # k-means on distinct colours, weighted
    distinct, weight = distinct.float() / 255, counts.float()
    if len(distinct) <= colours:
        common = distinct[weight.argmax()]
        return torch.cat([distinct, common.expand(colours - len(distinct), 3)])
    centres = distinct[torch.multinomial(weight, 1, generator=generator)]
    for _ in range(colours - 1):
        gap = torch.cdist(distinct, centres).min(1).values.pow(2) * weight
        centres = torch.cat([centres, distinct[torch.multinomial(gap, 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(distinct, centres).argmin(1)
        total = torch.zeros_like(centres).index_add_(0, assign, distinct * weight[:, None])
        mass = torch.zeros(colours).index_add_(0, assign, weight)
        centres = torch.where(mass[:, None] > 0, total / mass.clamp(min=1e-9)[:, None], centres)
    return centres


# --------------------------------------------------------------------------- prior

class _CachedAttention(nn.Module):
    """Multi-head attention whose keys / values can be kept between calls (one new position at a time)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                causal: bool = False, cache: dict | None = None) -> torch.Tensor:
        """Self-attention (context None) or cross-attention; `mask` [B, M] True = a key to read."""
        q = self._split(self.q(x))
        if cache is not None and "k" in cache and context is not None:  # cross: the text keys never change
            k, v = cache["k"], cache["v"]
        else:
            k, v = (self._split(t) for t in self.kv(x if context is None else context).chunk(2, -1))
            if cache is not None and context is None and "k" in cache:  # self: append the new positions
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            if cache is not None:
                cache["k"], cache["v"] = k, v
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and cache is None)
        return self.out(out.transpose(1, 2).flatten(2))


class _PriorBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.self_attn, self.cross_attn = _CachedAttention(dim, heads), _CachedAttention(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, text, text_mask, cache: dict | None = None):
        x = x + self.self_attn(self.norms[0](x), causal=True, cache=None if cache is None else cache["self"])
        x = x + self.cross_attn(self.norms[1](x), text, text_mask, cache=None if cache is None else cache["cross"])
        return x + self.ffn(self.norms[2](x))


class TextToCodes(nn.Module):
    """Caption tokens -> a distribution over each code of the grid given the codes before it.

    A small bidirectional Transformer reads the caption; the prior's causal blocks read it by
    cross-attention. Each grid position has a learned row and column embedding, so "at the top left"
    can be tied to the rows and columns it covers. `unconditional=True` adds a learned "no caption"
    context that training puts in place of some captions (`drop`), so sampling can use classifier-free
    guidance (Ho & Salimans, 2021; as Parti and Muse use it for token priors): logits = unconditional +
    guidance x (conditional - unconditional) pushes each code towards what the caption, not the
    scenes in general, makes likely.
    """

    def __init__(self, vocab_size: int, codes: int, grid: int, dim: int = 192, layers: int = 4,
                 heads: int = 4, text_layers: int = 2, max_text: int = 80, unconditional: bool = False):
        super().__init__()
        self.codes, self.grid = codes, grid
        if unconditional:
            self.null_text = nn.Parameter(torch.randn(dim) * 0.02)
        self.word = nn.Embedding(vocab_size, dim)
        self.word_position = nn.Embedding(max_text, dim)
        self.text_blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(text_layers))
        self.text_norm = nn.LayerNorm(dim)
        self.code_embed = nn.Embedding(codes + 1, dim)  # the last id is "start", before the first code
        self.row, self.col = nn.Embedding(grid, dim), nn.Embedding(grid, dim)
        self.blocks = nn.ModuleList(_PriorBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.logits = nn.Linear(dim, codes)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.word_position(positions)
        for block in self.text_blocks:
            x, _ = block(x, attention_mask)
        return self.text_norm(x)

    def _inputs(self, codes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Embeddings of the tokens fed at positions start.. : "start", then every code but the last."""
        b, n = codes.shape
        positions = torch.arange(start, start + n, device=codes.device)
        return self.code_embed(codes) + self.row(positions // self.grid) + self.col(positions % self.grid)

    def _without_caption(self, text: torch.Tensor, mask: torch.Tensor, drop: torch.Tensor):
        """(text, mask) with the rows where `drop` [B] is True replaced by the one-token "no caption" context."""
        if not hasattr(self, "null_text"):
            raise ValueError("this prior was built without a 'no caption' context (generation.caption_dropout: 0)")
        first = torch.zeros_like(mask)
        first[:, 0] = True
        null = torch.zeros_like(text)
        null[:, 0] = self.null_text.to(text.dtype)
        return torch.where(drop[:, None, None], null, text), torch.where(drop[:, None], first, mask)

    def forward(self, codes: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, N, codes] of each code of grids codes [B, h, w] (flattened, raster order); rows
        where `drop` [B] is True read no caption."""
        flat = codes.flatten(1)
        fed = torch.cat([torch.full_like(flat[:, :1], self.codes), flat[:, :-1]], 1)
        text = self.encode_text(input_ids, attention_mask)
        if drop is not None:
            text, attention_mask = self._without_caption(text, attention_mask.bool(), drop)
        x = self._inputs(fed)
        for block in self.blocks:
            x = block(x, text, attention_mask)
        return self.logits(self.norm(x))

    @torch.no_grad()
    def sample(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None,
               guidance: float = 1.0) -> torch.Tensor:
        """Code grids [B, grid, grid] drawn one code at a time (keys and values cached); guidance != 1
        runs each caption beside "no caption" and mixes their logits (classifier-free guidance)."""
        b = len(input_ids)
        text, mask = self.encode_text(input_ids, attention_mask), attention_mask.bool()
        if guidance != 1:  # rows b.. are the same captions, read as "no caption"
            drop = torch.arange(2 * b, device=text.device) >= b
            text, mask = self._without_caption(text.repeat(2, 1, 1), mask.repeat(2, 1), drop)
        caches = [{"self": {}, "cross": {}} for _ in self.blocks]
        token = torch.full((len(text), 1), self.codes, dtype=torch.long, device=input_ids.device)
        out = []
        for position in range(self.grid * self.grid):
            x = self._inputs(token, position)
            for block, cache in zip(self.blocks, caches):
                x = block(x, text, mask, cache)
            logits = self.logits(self.norm(x[:, -1])).float()
            if guidance != 1:
                logits = logits[b:] + guidance * (logits[:b] - logits[b:])
            logits = logits / max(temperature, 1e-6)
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, -1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            out.append(token)
            if guidance != 1:
                token = token.repeat(2, 1)
        return torch.cat(out, 1).view(-1, self.grid, self.grid)


class TextToImage(nn.Module):
    """The saved model: vqvae (images <-> codes) and prior (caption -> codes)."""

    def __init__(self, vocab_size: int, image_size: int = 64, codes: int = 512, code_dim: int = 32,
                 channels: int = 128, downsample: int = 3, dim: int = 128, layers: int = 4, heads: int = 4,
                 text_layers: int = 2, max_text: int = 80, palette: int = 0, unconditional: bool = False):
        super().__init__()
        self.vqvae = VQVAE(codes, code_dim, channels, downsample, palette)
        self.prior = TextToCodes(vocab_size, codes, image_size // 2 ** downsample, dim, layers, heads,
                                 text_layers, max_text, unconditional)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 guidance: float = 1.0) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] for the captions' token ids."""
        codes = self.prior.sample(input_ids, attention_mask, temperature, top_k, generator, guidance)
        return self.vqvae.decode(codes)
