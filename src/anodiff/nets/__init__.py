"""Networks: builders around MONAI's diffusion UNet and encoder, sized by preset."""

from anodiff.nets.builders import NET_PRESETS, NetConfig, build_classifier, build_unet

__all__ = ["NET_PRESETS", "NetConfig", "build_classifier", "build_unet"]
