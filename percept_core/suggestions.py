"""Suggestions from the current model: what a trained iteration predicts for frames under review.

Frames under review are blobs, not images of the project: each is decrypted in memory and sent as a quick test
with store=false, so nothing is added to the project. A frame is predicted once per iteration (the cache keeps
the answer in the ledger's file for the 30 days the service keeps suggestions); predictions for a page run a
few at a time, paced under the key's quota by the Custom Vision client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from .blobs import RetrainingBlob, map_bounded
from .customvision import CustomVisionClient, Prediction
from .errors import CuratorError
from .images import prepare_for_upload, thumbnail
from .ledger import BlobKey
from .suggestion_cache import SuggestionCache

# The Prediction API takes images up to 4 MB (QuickTestImage up to 6 MB): a frame under it goes as it would be
# uploaded, a larger one as a JPEG of at most PREDICTION_SIDE px a side, far under the limit.
MAX_PREDICTION_BYTES = 4_000_000
PREDICTION_SIDE = 2048


@dataclass(frozen=True)
class Suggestion:
    """What one iteration predicted for one blob version, most probable first."""

    key: BlobKey
    iteration_id: str
    predictions: tuple[Prediction, ...]
    made_at: datetime

    @classmethod
    def of(cls, key: BlobKey, iteration_id: str, predictions: Iterable[Prediction], made_at: float) -> Suggestion:
        ranked = tuple(sorted(predictions, key=lambda p: p.probability, reverse=True))
        return cls(key, iteration_id, ranked, datetime.fromtimestamp(made_at, UTC))

    @property
    def top(self) -> Prediction | None:
        return self.predictions[0] if self.predictions else None

    @property
    def margin(self) -> float:
        """How much surer the model is of its first choice than of its second (0: torn, or nothing predicted)."""
        if not self.predictions:
            return 0.0
        second = self.predictions[1].probability if len(self.predictions) > 1 else 0.0
        return self.predictions[0].probability - second

    def above(self, threshold: float) -> tuple[Prediction, ...]:
        """The predictions at least `threshold` probable (what a reviewer sees with weak ones hidden)."""
        return tuple(p for p in self.predictions if p.probability >= threshold)


def prediction_image(plaintext: bytes, *, what: str = "The decrypted data") -> bytes:
    """The bytes to predict on: the image as it would be uploaded, or a smaller JPEG when that is over 4 MB."""
    prepared = prepare_for_upload(plaintext, what=what)
    if len(prepared.data) <= MAX_PREDICTION_BYTES:
        return prepared.data
    return thumbnail(plaintext, size=(PREDICTION_SIDE, PREDICTION_SIDE), what=what)


class SuggestionService:
    """Suggestions for blobs from one project's trained iteration, each frame predicted once per iteration."""

    def __init__(
        self,
        customvision: CustomVisionClient,
        decrypt: Callable[[RetrainingBlob], bytes],
        cache: SuggestionCache,
        *,
        max_concurrency: int = 4,
    ) -> None:
        self.customvision = customvision
        self.decrypt = decrypt
        self.cache = cache
        self.max_concurrency = max_concurrency

    def suggest(
        self, blobs: Iterable[RetrainingBlob], *, iteration_id: str | None = None
    ) -> dict[BlobKey, Suggestion | CuratorError]:
        """A suggestion, or the error that stands in for one, by blob key.

        The iteration is the one named, else the project's latest trained one; an untrained project or an
        iteration it has not trained raises ProjectNotTrained before any frame is read. A frame that cannot be
        decrypted or predicted gets its error; the others go on.
        """
        iteration = (
            self.customvision.trained_iteration(iteration_id)
            if iteration_id
            else self.customvision.latest_trained_iteration()
        )
        items = list(dict.fromkeys(blobs))
        cached = self.cache.get([b.key for b in items], iteration.id)
        results: dict[BlobKey, Suggestion | CuratorError] = {
            key: Suggestion.of(key, iteration.id, predictions, made_at)
            for key, (made_at, predictions) in cached.items()
        }

        def predict(blob: RetrainingBlob) -> Suggestion:
            try:
                image = prediction_image(self.decrypt(blob), what=f"Blob {blob.name!r}")
                predictions = self.customvision.quick_test(image, iteration.id)
            except CuratorError:
                raise
            except Exception as exc:  # a decoder or SDK surprise: one frame without a suggestion, not a failed page
                raise CuratorError(
                    f"Could not get a suggestion for blob {blob.name!r} ({exc.__class__.__name__})."
                ) from exc
            made_at = self.cache.put(blob.key, iteration.id, predictions)
            return Suggestion.of(blob.key, iteration.id, predictions, made_at)

        missing = [b for b in items if b.key not in results]
        for blob, result in map_bounded(predict, missing, max_concurrency=self.max_concurrency):
            results[blob.key] = result
        return results


__all__ = [
    "MAX_PREDICTION_BYTES",
    "Suggestion",
    "SuggestionService",
    "prediction_image",
]
