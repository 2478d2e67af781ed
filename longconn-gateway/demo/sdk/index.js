// @longconn/client: the browser SDK of the longconn gateway (see README.md).
export * from "./codec.js";
export * from "./client.js";
export * from "./quality.js";
