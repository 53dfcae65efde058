"""Forward passes replayed as CUDA graphs, captured at start-up for a few input shapes.

A forward pass of CLIP launches hundreds of small kernels from Python; on a GPU that loop, not the GPU, sets
the pace of small batches (8.5 ms eager against 0.75 ms replayed for one short query on an H200). A captured
graph launches them all at once. An input is copied into the smallest captured shape that holds it (rows past
the batch and positions past the texts are zeros, which change no other row's vector), and the first rows of
the output are its vectors; an input that no captured shape holds, and every input on the CPU, runs eagerly.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]

# Passes run before a capture, so that lazy initialisation (cuBLAS handles, kernel choices) is not captured.
_WARM_UP_PASSES = 3


@dataclass(frozen=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    input: torch.Tensor
    output: torch.Tensor


def batch_buckets(max_batch_size: int) -> list[int]:
    """The batch sizes to capture: powers of two below `max_batch_size`, and it."""
    sizes = [1 << power for power in range(max_batch_size.bit_length()) if 1 << power < max_batch_size]
    return [*sizes, max_batch_size]


def _holds(shape: torch.Size, inputs: torch.Size) -> bool:
    return len(shape) == len(inputs) and all(have >= need for have, need in zip(shape, inputs, strict=True))


class GraphedForward:
    """`forward` (device tensor in, device tensor out, no host synchronisation), replayed from CUDA graphs
    for the shapes given to `capture`, eager for the rest. A call's result is valid until the next call."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self._graphs: list[_Graph] = []

    @property
    def captured_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(graph.input.shape) for graph in self._graphs]

    def capture(self, shapes: Sequence[tuple[int, ...]], dtype: torch.dtype, device: torch.device) -> None:
        """Captures one graph per shape, all in one memory pool: graphs of one forward never run at once."""
        pool = torch.cuda.graph_pool_handle()
        # The largest first, so that the smaller ones reuse its memory.
        for shape in sorted(shapes, key=lambda shape: torch.Size(shape).numel(), reverse=True):
            static_input = torch.zeros(shape, dtype=dtype, device=device)
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(_WARM_UP_PASSES):
                    self.forward(static_input)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                static_output = self.forward(static_input)
            self._graphs.append(_Graph(graph, static_input, static_output))
        self._graphs.sort(key=lambda graph: graph.input.numel())
        torch.cuda.synchronize(device)  # replays run on other streams, which must find the buffers ready

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        graph = next((graph for graph in self._graphs if _holds(graph.input.shape, inputs.shape)), None)
        if graph is None:
            return self.forward(inputs)
        graph.input.zero_()
        graph.input[tuple(slice(0, size) for size in inputs.shape)].copy_(inputs)
        graph.graph.replay()
        return graph.output[: inputs.shape[0]]
