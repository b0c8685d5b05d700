"""Test-only stand-in for the four timm helpers MobileSAM's TinyViT imports."""
