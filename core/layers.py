"""The one layer convention, and the only place block indices and residual layers are converted.

Layerscope numbers **residual layers**: layer 0 is the embeddings, layer l (1..L) the residual stream *after
block l*. Blocks are therefore 1-based wherever a user sees them: block l is the block whose output is layer l,
and "neuron n of block l" is a neuron of the MLP that writes into layer l. Every page, chart, table, CSV column
and CLI flag uses this.

Hooks and weight tensors index blocks from 0 (``adapter.blocks[b]``, b = 0..L-1), and the papers quote 0-based
block indices (Lioubashevski et al.'s saturation layers and the probe's first layer, Neo et al.'s "layer 26
neuron 5201" for GPT-2 ...). Code converts at exactly one boundary, with these functions:

    block index b (0-based, hooks / papers)  ->  residual layer b + 1  (= block b + 1, 1-based)
    residual layer l >= 1                    ->  block index l - 1

A quantity that is "the output of block b" in a paper (b 0-based) is layer ``layer_of_block(b)`` here; a paper
constant that is a 0-based block index c is ``layer_of_block(c)`` here, and pages that quote the paper say so
("the paper's layer 5 = after block 6 here").
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def layer_of_block(block_index: int) -> int:
    """0-based block index b (a hook's ``blocks[b]``, a paper's layer b) -> the residual layer it writes, b + 1."""
    b = int(block_index)
    if b < 0:
        raise ValueError(f"A block index is 0 or more; got {b}.")
    return b + 1


def block_of_layer(layer: int) -> int:
    """Residual layer l >= 1 (the stream after block l) -> the 0-based block index l - 1 that wrote it."""
    lay = int(layer)
    if lay < 1:
        raise ValueError(f"Layer {lay} is the embeddings: no block wrote it (blocks write layers 1..L).")
    return lay - 1


def layers_of_blocks(block_indices: Iterable[int]) -> list[int]:
    return [layer_of_block(b) for b in block_indices]


def blocks_of_layers(layers: Iterable[int]) -> list[int]:
    return [block_of_layer(lay) for lay in layers]


def check_block_layer(layer: int, n_layers: int, what: str = "block") -> int:
    """``layer`` when it names a block of the model (1..n_layers), else a ValueError that states the convention."""
    lay = int(layer)
    if not 1 <= lay <= n_layers:
        raise ValueError(f"The {what} must lie in 1..{n_layers} (layer l = the residual after block l; "
                         f"0 is the embeddings); got {lay}.")
    return lay


def layer_label(layer: int) -> str:
    """0 -> 'emb', l -> 'l' (the residual after block l)."""
    return "emb" if int(layer) == 0 else str(int(layer))


def after_block(layer: int) -> str:
    """0 -> 'the embeddings', l -> 'after block l' (for captions and tooltips)."""
    return "the embeddings" if int(layer) == 0 else f"after block {int(layer)}"


def layers_of_block_array(block_indices: np.ndarray | Iterable[int]) -> np.ndarray:
    """int array of 0-based block indices b, any shape (e.g. saturation layers [pos, k] computed on a
    [block, pos, k] stack) -> the same shape of residual layers b + 1: :func:`layer_of_block`, vectorised, for
    the frames an analysis builds from its 0-based internal arrays."""
    blocks = np.asarray(block_indices, dtype=np.int64)
    if blocks.size and int(blocks.min()) < 0:
        raise ValueError(f"A block index is 0 or more; got {int(blocks.min())}.")
    return blocks + 1


def paper_layer_note(block_index: int) -> str:
    """A paper's constant quoted as a 0-based block index c -> "the paper's layer c = after block c+1 here".

    For captions that quote a paper: Lioubashevski et al.'s probe starts at their layer 5 (0-based), which is
    ``paper_layer_note(5)`` = "the paper's layer 5 = after block 6 here"."""
    return f"the paper's layer {int(block_index)} = {after_block(layer_of_block(block_index))} here"


def layer_entering(block: int) -> int:
    """1-based block l -> the residual layer it reads, l - 1 (0, the embeddings, for block 1).

    Where a unit is injected "into the stream entering block l" (the Neuron topics page's Lo modes), that stream
    is this layer: the output of block l - 1."""
    return block_of_layer(block)
