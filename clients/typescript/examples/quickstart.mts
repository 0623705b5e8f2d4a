import { asStrings, InferClient } from "infer-client";
const client = new InferClient(process.env.INFER_TARGET ?? "localhost:8001");
const history = Float32Array.from({ length: 24 * 14 }, (_, t) => 100 + 30 * Math.sin((Math.PI * t) / 12) + (t % 5));
const { outputs } = await client.infer("forecast", { history: { data: history, shape: [1, history.length] } });
console.log("next 24 h by", asStrings(outputs.model), outputs.mean.shape, outputs.mean.data); client.close();
