"""DADIN in plain Keras: mixed batches of both domains in, target-domain AUC out (run by tests/test_examples.py)."""
import keras
import tfdebias
from tfdebias.methods.dadin import VARIANTS

splits, schema = tfdebias.data.load("cross_domain_ctr", ["train", "valid", "test"])  # train: both domains
train = tfdebias.data.make_dataset(splits["train"], schema, batch_size=1024, shuffle=True)
valid, test = (tfdebias.data.make_dataset(splits[s], schema, batch_size=8192) for s in ("valid", "test"))
model = tfdebias.models.build("dadin", schema, embedding_dim=16, hidden_units=[64, 32], **VARIANTS["dadin++"])
model(next(iter(valid))[0])                       # build every layer (classifiers too) before the optimizer
model.compile(optimizer=keras.optimizers.Adam(1e-3))  # DADIN trains with its own loss (Eq. 22)
model.fit(train, validation_data=valid, epochs=2, verbose=2)
print({s: round(model.evaluate(ds, return_dict=True, verbose=0)["auc"], 4) for s, ds in [("valid", valid), ("test", test)]})
