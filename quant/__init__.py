"""squeezeforge.quant"""
