//! Frames to normalized tensors, identical to torchvision's ImageNet eval transform.
