//! End-to-end: the real `demeter` binary, real folders, real photos, real ONNX Runtime, over HTTP.

mod archive;
mod cli;
mod corpus;
mod faults;
mod lan;
mod models;
mod notify;
mod pipeline;
mod restart;
mod watch;
