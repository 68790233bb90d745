"""From the preprocessed dataset to normalised model tensors, and back to physical fields."""

from climai.data.features import FeatureSpec, SplitTensors, build_split, to_physical

__all__ = ["FeatureSpec", "SplitTensors", "build_split", "to_physical"]
