"""Per-service zstd dictionaries: trained from a service's small items, sealed in the catalog.

A dictionary that does not open with this installation's key is refused (listed in
``refused_dictionaries``), and items that need it read as damaged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cognopt_ray.config import check_service_name
from cognopt_ray.errors import IntegrityError, InvalidInput
from cognopt_ray.storage import codecs
from cognopt_ray.storage.sealing import open_dictionary, seal_dictionary

logger = logging.getLogger(__name__)


class Dictionaries:
    """Service dictionaries (a part of :class:`~cognopt_ray.storage.store.TieredStore`)."""

    def _load_dictionaries(self) -> None:
        """Open the catalog's sealed dictionaries; those that do not open are refused."""
        for dict_id, (service, blob) in sorted(self.catalog.dictionaries().items()):
            data = open_dictionary(self._dict_sealer, service, blob)
            if data is None:
                self.refused_dictionaries.append(dict_id)
                continue
            self._dicts[dict_id] = (service, codecs.load_dictionary(data))
            self._service_dict[service] = dict_id

    def _zdict(self, dict_id: int | None) -> codecs.Dictionary | None:
        if dict_id is None:
            return None
        if dict_id not in self._dicts:
            raise IntegrityError(
                f"zstd dictionary {dict_id} is missing or was refused (not sealed with this key)",
                hint="restore the item from a backup with repair(item_id)",
            )
        return self._dicts[dict_id][1]

    def _maybe_train_dictionaries(self, norm: list[tuple]) -> None:
        by_service: dict[str, list[bytes]] = {}
        for _item_id, data, service, tier, codec, _level in norm:
            # Trained automatically for the tiers where size matters most; warm/hot items use a
            # dictionary once one exists (train_dictionary() or a cold/archive batch made it).
            if (
                codec == "auto"
                and tier in ("cold", "archive")
                and service not in self._service_dict
                and isinstance(data, (bytes, bytearray))
                and 64 <= len(data) <= codecs.DICT_MAX_ITEM * 4
            ):
                by_service.setdefault(service, []).append(bytes(data))
        for service, samples in by_service.items():
            if len(samples) >= self.cfg.dictionary_min_samples:
                self.train_dictionary(service, samples)

    def train_dictionary(self, service: str, samples: list[bytes] | None = None) -> dict[str, Any]:
        """Train (or retrain) the zstd dictionary of ``service`` from ``samples`` or its small items."""
        check_service_name(service)
        if samples is None:
            samples = []
            for rec in self.catalog.items(
                "service=? AND kind='bytes' AND raw_size<=?", (service, codecs.DICT_MAX_ITEM * 4)
            ):
                try:
                    samples.append(self._read_bytes(rec))
                except Exception:  # noqa: BLE001 - a bad item is not a sample
                    continue
                if len(samples) >= 2000:
                    break
        total = sum(len(s) for s in samples)
        # zstd's guidance: a dictionary about 1/100 of the training data; it is stored once per
        # service, so on a small corpus a large dictionary would cost more than it saves.
        size = min(self.cfg.dictionary_bytes, max(2048, total // 100))
        try:
            data = codecs.train_dictionary(samples[:4000], size)
        except Exception as e:  # noqa: BLE001 - zstd refuses too little or too uniform data
            raise InvalidInput(
                f"cannot train a dictionary for {service!r}: {e}",
                hint=f"store at least {self.cfg.dictionary_min_samples} small items first",
            ) from None
        dict_id = self.catalog.add_dictionary(service, seal_dictionary(self._dict_sealer, service, data), time.time())
        self._dicts[dict_id] = (service, codecs.load_dictionary(data))
        self._service_dict[service] = dict_id
        logger.info(
            "trained a %d-byte zstd dictionary for service %s from %d samples", len(data), service, len(samples)
        )
        return {"service": service, "dict_id": dict_id, "bytes": len(data), "samples": len(samples)}


__all__ = ["Dictionaries"]
