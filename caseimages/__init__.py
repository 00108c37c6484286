"""MDT case images: pictures of the case (PNG, JPEG, DICOM) that the presenting doctor shows to
the whole room at full resolution, with a shared pointer and zoom (docs/api.md, "Case images";
docs/protocol.md, "Case images").

* ``render.py``: checks an upload by decoding it (Pillow, pydicom) and renders DICOM to 8-bit
  PNG (Modality LUT, then window/level);
* ``db.py``: the ``case_images`` table (migration 0010);
* ``service.py``: uploads (bytes to the recordings' storage, metadata to the database) and
  the shared view of each room (``show_image`` / ``image_view``), coalesced.

Dependencies: ``signaling → caseimages → recording (storage), rooms``; nothing here imports
``signaling`` or ``records``.
"""
