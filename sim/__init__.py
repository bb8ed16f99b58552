"""squeezeforge.sim"""
