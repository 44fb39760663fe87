"""Word-level LSTM language model, as the paper's Penn Treebank model (Zaremba et al. 2014)."""

from __future__ import annotations

import torch
from torch import nn

from lossurf.models.nin import check_positive, check_probability

__all__ = ["LSTMLM", "INIT_RANGE"]

#: Zaremba et al. initialize every parameter uniformly in [-0.1, 0.1] ("small" model).
INIT_RANGE = 0.1


class LSTMLM(nn.Module):
    """``Embedding → dropout → LSTM → dropout → Linear``: next-word logits for every position.

    Each call starts from a zero hidden state (no state is carried between batches), so the
    loss at a weight vector depends only on that vector and the batch, which is what a loss
    surface needs. Every parameter starts from U(-0.1, 0.1), as Zaremba et al. The forward
    has no Python branches on the input, so ``torch.fx`` traces it (the surface evaluator's
    rewrites need that).

    Args:
        vocab_size: number of words (default 10000, the Penn Treebank vocabulary).
        width: embedding and hidden size (default 200, Zaremba's small model).
        layers: stacked LSTM layers (default 2).
        dropout: dropout on embeddings, between LSTM layers and on outputs (default 0).
        tie_weights: share the embedding matrix with the output layer (default False).

    State-dict keys: ``embedding.weight``, ``rnn.weight_ih_l0``..., ``decoder.weight``,
    ``decoder.bias``. With ``tie_weights`` the two shared keys hold one tensor.
    """

    def __init__(
        self,
        *,
        vocab_size: int = 10000,
        width: int = 200,
        layers: int = 2,
        dropout: float = 0.0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        check_positive("lstm", vocab_size=vocab_size, width=width, layers=layers)
        check_probability("lstm", "dropout", dropout)
        self.embedding = nn.Embedding(vocab_size, width)
        self.drop = nn.Dropout(dropout)
        # nn.LSTM warns when given inter-layer dropout with a single layer.
        self.rnn = nn.LSTM(
            width, width, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True
        )
        self.decoder = nn.Linear(width, vocab_size)
        with torch.no_grad():
            for param in self.parameters():
                param.uniform_(-INIT_RANGE, INIT_RANGE)
        if tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, vocab_size]`` for token ids ``x: LongTensor[B, T]``."""
        out, _ = self.rnn(self.drop(self.embedding(x)))
        return self.decoder(self.drop(out))
