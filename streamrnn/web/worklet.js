// AudioWorklet processor: hands each render quantum of the (mono) input to the
// main thread as a Float32Array. The main thread batches and sends them.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0) {
      const block = new Float32Array(channels[0]); // a copy: the engine reuses its buffers
      this.port.postMessage(block, [block.buffer]);
    }
    return this.running;
  }
}

registerProcessor("capture", CaptureProcessor);
