// Example parameters for main.bicep. Copy, fill in, and deploy with
//   export TWILIO_AUTH_TOKEN=...                               # from the Twilio console
//   export VOICE_BRIDGE_STREAM_TOKEN_KEY=$(openssl rand -hex 32)  # keep it: reuse it on every deployment
//   az deployment group create -g <rg> -f deploy/azure/main.bicep -p deploy/azure/main.bicepparam
// The two secrets are read from the environment of the machine running the deployment, so they are
// never written to a file.
using './main.bicep'

param image = 'myregistry.azurecr.io/voice-bridge:0.1.0'
param containerRegistryName = 'myregistry'
param aiAccountName = 'my-ai-foundry'
param voiceLiveModel = 'gpt-realtime'
param twilioAuthToken = readEnvironmentVariable('TWILIO_AUTH_TOKEN')
param streamTokenKey = readEnvironmentVariable('VOICE_BRIDGE_STREAM_TOKEN_KEY')
param twilioAccountSid = ''
param drainSeconds = 30
param concurrentRequests = 30
param maxCallsPerReplica = 40
param minReplicas = 1
param maxReplicas = 10
