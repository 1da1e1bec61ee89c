"""CP2Rec with plain Keras: load, add estimated propensities, build, compile, fit, evaluate, export."""
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tfdebias
from tfdebias.export import export_saved_model
from tfdebias.methods.cp2rec import CP2Rec, add_propensity

splits, schema = tfdebias.data.load("confounded_ctr", ["train", "valid", "test"])
splits = add_propensity(splits, schema)  # p_hat = n_u * n_i / N from the training rows
train = tfdebias.data.make_dataset(splits["train"], schema, batch_size=512, shuffle=True)
valid = tfdebias.data.make_dataset(splits["valid"], schema, batch_size=8192)
model = CP2Rec(schema, backbone="dcn", purifier="proj", gamma=0.1, backbone_args={"hidden_units": [64, 32]})
model(next(iter(valid))[0])  # build every sub-layer before the optimizer
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(train, validation_data=valid, epochs=1, verbose=2)

test = splits["test"]
pred = model.predict(tfdebias.data.make_dataset(test, schema, batch_size=8192), verbose=0)[:, 0]
print("unbiased test AUC", tfdebias.evaluation.metrics.auc(test["click"], pred))

path = export_saved_model(model, schema, tempfile.mkdtemp() + "/cp2rec")
served = tf.saved_model.load(str(path)).signatures["serving_default"]
request = {f.name: tf.constant(test[f.name][:4]) for f in schema.inputs}
print("served y_U", served(**request)["prediction"].numpy(), "model", pred[:4])
assert np.allclose(served(**request)["prediction"].numpy(), pred[:4], atol=1e-5)
