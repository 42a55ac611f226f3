"""The Compression Lab dashboard (Streamlit): ``compression-lab dashboard`` runs ``streamlit run`` on this package's
``app.py``; from a checkout, ``streamlit run dashboard/app.py``.

The app imports its helpers (``state``, ``store``, ``jobs``, ``charts``, ...) by their plain names, with this folder on
``sys.path`` (``app.py`` puts it there); importing this package runs nothing.
"""
