"""squeezeforge.host"""
