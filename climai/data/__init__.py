"""From the preprocessed dataset to normalised model tensors, and back to physical fields.

:mod:`climai.data.prepared` knows the prepared store's layout (numpy/xarray only: preprocess and
evaluate import it without torch); :mod:`climai.data.features` and :mod:`climai.data.dataset` build
the model's tensors and its patch dataset (torch).
"""
