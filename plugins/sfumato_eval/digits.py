"""``sfumato eval digits``: how well a class- or text-conditional model draws digits, judged by the
independent ``DigitsClassifier``.

- **class accuracy**: generate ``per_class`` images of each digit 0-9, asked for by label
  (class-conditional models) or by a prompt such as "a handwritten digit 7" (text-conditional
  ones); the fraction the classifier assigns to the digit they were asked for (per class and overall);
- **Frechet distance** between the classifier's 64 penultimate features of the generated images
  and of the real digits test split (FID's formula on a digits network; lower is better). For
  scale, the report also gives the distance between the real train and test splits.
"""

from __future__ import annotations

import argparse
from typing import Any

import sfumato
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .commands import add_model_arguments, format_table, load_model, model_name, positive_int, write_json
from .datasets import dataset_class, digits_caption_template, labelled_images
from .digits_classifier import DigitsClassifier, load_digits_classifier
from .frechet import feature_frechet_distance


@torch.no_grad()
def classifier_features(classifier: DigitsClassifier, images: Tensor,
                        batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """``(features [N, 64], predicted labels [N])`` of ``images [N, 3, H, W]`` in [-1, 1]."""
    features = torch.cat([classifier.features(images[i : i + batch_size])
                          for i in range(0, len(images), batch_size)])  # (N, 64)
    return features, classifier.head(features).argmax(dim=-1)


def check_template(template: str) -> str:
    """A prompt template must name the digit exactly once as ``{}``; anything else would prompt
    every class with the same text (or fail deep inside ``str.format``)."""
    rest = template.replace("{}", "", 1)
    if "{" in rest or "}" in rest or rest == template:
        raise sfumato.SpecError(f"the prompt template must contain '{{}}' exactly once (where the digit goes) and "
                                f"no other braces, e.g. {digits_caption_template()!r}; got {template!r}")
    return template


def prompt_template(pipe: sfumato.Pipeline, template: str | None) -> str | None:
    """The template to prompt with, or None to ask by label: ``template`` if given, else the
    dataset's caption for a pipeline whose task needs a prompt (text-to-image)."""
    if template is not None:
        return check_template(template)
    needs = getattr(pipe.component("task"), "needs", ())
    return digits_caption_template() if "prompt" in needs else None


def generate_digits(pipe: sfumato.Pipeline, per_class: int, seed: int = 0, progress: bool = True,
                    template: str | None = None) -> tuple[Tensor, Tensor]:
    """``(images [10 * per_class, 3, H, W] in [-1, 1], labels)``; digit ``c`` uses seed ``seed + c``
    and is asked for by label, or by the prompt ``template.format(c)`` when a template is given.
    Images go through PIL (uint8), as a saved sample would."""
    if template is not None:
        check_template(template)
    images, labels = [], []
    for label in tqdm(range(10), desc="digits", unit="class", disable=not progress):
        request = {"labels": label} if template is None else {"prompt": template.format(label)}
        result = pipe(**request, seed=seed + label, num_images=per_class, progress=False)
        images.append(sfumato.from_pil(result.images))
        labels += [label] * per_class
    return torch.cat(images), torch.tensor(labels)


def evaluate_digits(images: Tensor, labels: Tensor, classifier: DigitsClassifier | None = None) -> dict[str, Any]:
    """Class accuracy of ``images`` for their intended ``labels`` and their Frechet distance to the
    real test digits (plus the train-vs-test distance of real digits, for scale)."""
    classifier = classifier or load_digits_classifier()
    features, predicted = classifier_features(classifier, images)
    real_test, _ = labelled_images({"type": "digits", "split": "test"})
    real_train, _ = labelled_images({"type": "digits", "split": "train"})
    test_features, _ = classifier_features(classifier, real_test)
    train_features, _ = classifier_features(classifier, real_train)
    hits = predicted == labels
    per_class = {str(c): hits[labels == c].float().mean().item() for c in range(10) if (labels == c).any()}
    return {
        "accuracy": hits.float().mean().item(),
        "per_class_accuracy": per_class,
        "frechet_distance": feature_frechet_distance(features, test_features),
        "real_train_vs_test_frechet_distance": feature_frechet_distance(train_features, test_features),
        "generated": len(images),
        "real_test": len(real_test),
    }


def run(args: argparse.Namespace) -> int:
    dataset_class("digits", "the real digits the generated ones are compared with")  # before any generation
    pipe = load_model(args)
    template = prompt_template(pipe, args.prompt)
    images, labels = generate_digits(pipe, args.per_class, args.seed, progress=not args.no_progress,
                                     template=template)
    report = evaluate_digits(images, labels)
    rows = [[f"accuracy of class {c}", v] for c, v in report["per_class_accuracy"].items()]
    rows += [["class accuracy", report["accuracy"]],
             [f"Frechet distance to {report['real_test']} real test digits", report["frechet_distance"]],
             ["  (real train vs real test, for scale)", report["real_train_vs_test_frechet_distance"]]]
    print(format_table([f"{report['generated']} generated digits", "value"], rows))
    if args.out:
        write_json(args.out, {"benchmark": "digits", "model": model_name(args), "overrides": args.set, "seed": args.seed,
                              "per_class": args.per_class, "prompt": template, **report})
    return 0


def add_digits_command(cli: Any) -> None:
    parser = cli.add_parser("digits", help="class accuracy and Frechet distance of a class- or text-conditional "
                            "digits model",
                            description="Generate N digits per class 0-9 (by label, or by prompt for text-to-image "
                            "models), classify them with the shipped digits classifier, and compare its features "
                            "with the real test digits.")
    add_model_arguments(parser)
    parser.add_argument("--per-class", type=positive_int, default=100, metavar="N",
                        help="images per class (default 100)")
    parser.add_argument("--prompt", metavar="TEMPLATE",
                        help="ask for digit N with this prompt, '{}' standing for N (default: by label; for "
                        "text-to-image models the digits dataset's caption template)")
    parser.set_defaults(handler=run)
