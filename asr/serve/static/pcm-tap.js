// An AudioWorklet that hands the page each render quantum of the microphone, mixed to mono:
// the live transcription sends them to the server as 16-bit PCM.
"use strict";

class PcmTap extends AudioWorkletProcessor {
  process(inputs) {
    const channels = inputs[0];
    if (channels.length) {
      const mono = new Float32Array(channels[0].length);
      for (const ch of channels) for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / channels.length;
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true; // the output stays silent: nothing is played back
  }
}

registerProcessor("pcm-tap", PcmTap);
