"""Ten lines from a simulator to a fitted Keras model (run by tests/test_examples.py)."""
import keras
import tfdebias

splits, schema = tfdebias.data.load("confounded_ctr", ["train", "valid", "test"])
train = tfdebias.data.make_dataset(splits["train"], schema, batch_size=512, shuffle=True)
valid, test = (tfdebias.data.make_dataset(splits[s], schema, batch_size=8192) for s in ("valid", "test"))
model = tfdebias.models.build("deepfm", schema, embedding_dim=16)
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
model.fit(train, validation_data=valid, epochs=2, verbose=2)
print({split: model.evaluate(ds, return_dict=True, verbose=0)["auc"] for split, ds in [("valid", valid), ("test", test)]})
