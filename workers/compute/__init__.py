"""Pure torch + transformer-lens compute for SAE dashboards: tensors in, arrays out, no Django."""
