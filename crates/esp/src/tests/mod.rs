mod esn;
mod vectors;
