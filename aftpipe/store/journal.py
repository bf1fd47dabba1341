"""Done-records of shards written by ranks that do not own the manifest.

In a multi-process extract one rank (rank 0) owns the manifest; the others write their shards and say so here:
one small JSON file per finished shard (`<store>.journal/<split>.<shard>.json`: its rows, the split's
fingerprint and the checksum of its bytes), written after the shard's bytes. Rank 0 merges them into the
manifest when every rank has finished, and so does any later run that opens the store (a job killed half
way, resumed with another number of ranks), which re-hashes the shards before trusting them, like every
done shard of a resumed store. A record is removed once the manifest holds it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aftpipe.store.location import fresh, is_remote, remove, write_bytes

_RECORD = re.compile(r".+\.\d+\.json")  # <split>.<shard>.json


class ShardJournal:
    def __init__(self, store: Any) -> None:
        self.folder = store.with_name(store.name + ".journal")

    def record(self, split: str, shard: int, rows: tuple[int, int], sha256: str, fingerprint: str) -> None:
        if not is_remote(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        doc = {"split": split, "shard": shard, "rows": list(rows), "sha256": sha256, "fingerprint": fingerprint}
        write_bytes(self.folder / f"{split}.{shard}.json", json.dumps(doc, sort_keys=True).encode())

    def records(self) -> list[dict[str, Any]]:
        """Every readable record (a torn or foreign file is skipped: its shard is simply computed again)."""
        if not fresh(self.folder).exists():  # other processes wrote it: no cached listing of an object store
            return []
        out = []
        for f in sorted(self.folder.iterdir(), key=lambda p: p.name):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            if (isinstance(doc, dict) and isinstance(doc.get("split"), str) and isinstance(doc.get("shard"), int)
                    and isinstance(doc.get("sha256"), str) and isinstance(doc.get("rows"), list)):
                out.append(doc)
        return out

    def forget(self, records: list[dict[str, Any]]) -> None:
        for doc in records:
            f = self.folder / f"{doc['split']}.{doc['shard']}.json"
            if is_remote(f):
                remove(f)
            else:
                f.unlink(missing_ok=True)
        if not is_remote(self.folder) and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def clear(self) -> None:
        """Remove every record (the records of a store that is gone or being replaced), and the folder if
        that empties it: a file aftpipe did not write there stays."""
        if not fresh(self.folder).exists():
            return
        for f in self.folder.iterdir():
            if _RECORD.fullmatch(f.name) and not f.is_dir():
                remove(f)
        if not is_remote(self.folder) and not any(self.folder.iterdir()):
            self.folder.rmdir()
