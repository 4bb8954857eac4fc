"""Fake `google.colab.drive`: `mount` links <mountpoint>/MyDrive to $FAKE_COLAB_DRIVE (a plain
folder that outlives the kernel, as Drive outlives a runtime); `flush_and_unmount` removes the link,
so code that touches Drive after unmounting fails here as it would in Colab."""
import os
from pathlib import Path


_MOUNTPOINT = None   # set by mount()


def _store() -> Path:
    store = os.environ.get("FAKE_COLAB_DRIVE")
    if not store:
        raise RuntimeError("fake google.colab: set FAKE_COLAB_DRIVE to the folder that plays My Drive")
    return Path(store)


def mount(mountpoint: str, force_remount: bool = False, timeout_ms: int = 120000,
          readonly: bool = False) -> None:
    global _MOUNTPOINT
    from . import _log
    _MOUNTPOINT = mountpoint
    link = Path(mountpoint) / "MyDrive"
    if link.is_symlink() and not force_remount:
        print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, call "
              f'drive.mount("{mountpoint}", force_remount=True).')
        return
    _store().mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(_store(), target_is_directory=True)
    _log(f"mount {mountpoint}")
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms: int = 86400000) -> None:
    from . import _log
    # The mount belongs to the runtime, not to the kernel that made it (a restarted kernel can
    # unmount it too); the tests mount at $HAVOC_DRIVE_ROOT, Colab at /content/drive.
    root = _MOUNTPOINT or os.environ.get("HAVOC_DRIVE_ROOT", "/content/drive")
    link = Path(root) / "MyDrive"
    if not link.is_symlink():
        raise ValueError("Drive is not mounted")
    link.unlink()
    _log("flush_and_unmount")
    print("All changes made in this colab session should now be visible in Drive.")
