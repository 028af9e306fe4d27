"""Model sections of the reference's water example inputs, unchanged, for tests that train
them with both codes (not a test module)."""

# model sections of the reference's examples/water/se_e2_r/input.json and
# examples/water/se_e3/input.json, unchanged
EXAMPLE_MODELS = {
    "se_e2_r": {
        "type_map": ["O", "H"],
        "descriptor": {
            "type": "se_e2_r",
            "sel": [46, 92],
            "rcut_smth": 0.50,
            "rcut": 6.00,
            "neuron": [5, 10, 20],
            "resnet_dt": False,
            "seed": 1,
            "_comment": " that's all",
        },
        "fitting_net": {
            "neuron": [120, 120, 120],
            "resnet_dt": True,
            "seed": 1,
            "_comment": "that's all",
        },
        "_comment": " that's all",
    },
    "se_e3": {
        "type_map": ["O", "H"],
        "descriptor": {
            "type": "se_e3",
            "sel": "auto",
            "rcut_smth": 0.50,
            "rcut": 5.80,
            "neuron": [2, 4, 8],
            "resnet_dt": False,
            "precision": "float64",
            "seed": 1,
            "_comment": " that's all",
        },
        "fitting_net": {
            "neuron": [240, 240, 240],
            "resnet_dt": True,
            "precision": "float64",
            "seed": 1,
            "_comment": " that's all",
        },
        "_comment": " that's all",
    },
}
