"""The sharing layer: trained models in and out of export directories and the Hub.

It owns :func:`~textvae.hub.loading.load_model` (an export, a run directory or a Hub
repo id, with one-line errors) and of the attribute vectors stored with it, the upload of an export in one Hub commit
(:mod:`~textvae.hub.push`) with no local path in it
(:mod:`~textvae.hub.local_paths`), the model card, and the explanation of Hub failures. It uses
the models layer; only the CLI imports it, and Python code that pushes calls its entry point
:func:`textvae.hub.push.push_model` (or :func:`~textvae.hub.push.push_export`) by name.
"""
