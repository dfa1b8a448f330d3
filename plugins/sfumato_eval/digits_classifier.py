"""An independent digits classifier: the judge of ``sfumato eval digits``.

A small CNN trained on the ``digits`` train split (seed 0) that reads any ``[B, 3 or 1, H, W]``
image in [-1, 1] (white ink on black), resized to 16 x 16 (the digits are 8 x 8 at heart). Its 64
penultimate features are the space of the evaluation's Frechet distance, as Inception's pool
features are FID's. Test accuracy 0.9944 (docs/evaluation.md).

The weights ship beside this file (``digits_classifier.safetensors``, float16, ~180 kB); their
metadata records the recipe and the accuracy on the digits test split. Retrain them, in about
7 seconds on one CPU thread, with::

    python -m sfumato_eval.digits_classifier            # writes the shipped file
    python -m sfumato_eval.digits_classifier --out my_classifier.safetensors --epochs 30
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sfumato
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datasets import labelled_images

#: The shipped weights.
WEIGHTS = Path(__file__).with_name("digits_classifier.safetensors")

#: The side of the images the classifier reads; others are resized to it.
RESOLUTION = 16

#: Width of the penultimate features (the Frechet distance's space).
FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
    """Conv stages of 16, 32 and 64 channels (16 -> 8 -> 4 pixels), a 64-wide feature layer, a
    linear head; 89,546 parameters."""

    def __init__(self) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(
            *stage(1, 16), *stage(16, 32), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),  # (B, 64, 4, 4)
            nn.Flatten(), nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    @staticmethod
    def prepare(images: Tensor) -> Tensor:
        """``[B, 3 or 1, H, W]`` in [-1, 1] -> ``[B, 1, 16, 16]`` grey (the channel mean), resized."""
        grey = images.float().mean(dim=1, keepdim=True)  # (B, 1, H, W)
        if grey.shape[-2:] != (RESOLUTION, RESOLUTION):
            grey = F.interpolate(grey, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True,
                                 align_corners=False)
        return grey

    def features(self, images: Tensor) -> Tensor:
        """``[B, 64]`` penultimate features."""
        return self.body(self.prepare(images))

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 10]`` logits."""
        return self.head(self.features(images))


def load_digits_classifier(path: str | Path = WEIGHTS) -> DigitsClassifier:
    """The classifier with the shipped (or given) weights, in eval mode, float32, on the CPU."""
    model = DigitsClassifier()
    state = {k: v.float() for k, v in sfumato.load_weights(path).items()}
    return sfumato.load_into(model, state, source=str(path)).eval()


@torch.no_grad()
def accuracy(model: DigitsClassifier, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """Fraction of ``images`` whose arg-max class is ``labels``."""
    model.eval()
    predicted = torch.cat([model(images[i : i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])
    return (predicted == labels).float().mean().item()


def _jitter(images: Tensor, generator: torch.Generator, shift: float = 0.12, scale: float = 0.1,
            angle: float = 0.15) -> Tensor:
    """Random small affine distortions: shifts up to ``shift`` of the side, scales within
    1 +- ``scale``, rotations up to ``angle`` radians; black fill, like the border."""
    n = len(images)
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # (N, 4) in [-1, 1]
    zoom, turn = 1 + scale * u[:, 0], angle * u[:, 1]
    theta = torch.stack([
        torch.stack([zoom * turn.cos(), -zoom * turn.sin(), 2 * shift * u[:, 2]], dim=1),
        torch.stack([zoom * turn.sin(), zoom * turn.cos(), 2 * shift * u[:, 3]], dim=1),
    ], dim=1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images + 1, grid, align_corners=False, padding_mode="zeros") - 1


def train_digits_classifier(epochs: int = 30, seed: int = 0, batch_size: int = 64, lr: float = 2e-3,
                            progress: bool = False) -> tuple[DigitsClassifier, float]:
    """Train on the digits train split (with small random shifts, scales and rotations); returns the model
    and its accuracy on the test split. Deterministic for a seed on one machine.

    It runs on one CPU thread: a network this small trains several times faster so than with
    threads contending for a shared machine (the previous thread count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(epochs, seed, batch_size, lr, progress)
    finally:
        torch.set_num_threads(threads)


def _train(epochs: int, seed: int, batch_size: int, lr: float, progress: bool) -> tuple[DigitsClassifier, float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_images, labels = labelled_images({"type": "digits", "split": "train", "resolution": RESOLUTION})
    test_images, test_labels = labelled_images({"type": "digits", "split": "test", "resolution": RESOLUTION})
    images = train_images[:, :1].contiguous()  # (N, 1, 16, 16)
    model = DigitsClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(model(_jitter(images[batch], generator)), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
    return model.eval(), accuracy(model, test_images, test_labels)


def save_digits_classifier(model: DigitsClassifier, path: str | Path, test_accuracy: float, epochs: int,
                           seed: int) -> Path:
    """Write the weights as float16 safetensors, the recipe and test accuracy in the metadata."""
    state = {k: v.half() for k, v in model.state_dict().items()}
    metadata = {"sfumato.digits_classifier": {
        "test_accuracy": round(test_accuracy, 4), "epochs": epochs, "seed": seed,
        "data": "digits train split (test_fraction 0.2, seed 0), 16 x 16",
        "retrain": "python -m sfumato_eval.digits_classifier",
    }}
    return sfumato.save_weights(state, path, metadata)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfumato_eval.digits_classifier",
                                     description="Train the digits classifier of `sfumato eval digits`.")
    parser.add_argument("--out", default=str(WEIGHTS), help="where to write the weights (default: the shipped file)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model, test_accuracy = train_digits_classifier(args.epochs, args.seed, progress=True)
    path = save_digits_classifier(model, args.out, test_accuracy, args.epochs, args.seed)
    print(f"test accuracy {test_accuracy:.4f}; trained in {time.perf_counter() - start:.1f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
