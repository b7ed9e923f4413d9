// voice-bridge on Azure Container Apps.
//
// Creates: a Log Analytics workspace, a Container Apps managed environment, a user-assigned managed
// identity (granted "Cognitive Services User" on the existing Azure AI Services / AI Foundry account,
// and AcrPull on the registry if one is named), and the container app itself: external HTTPS
// ingress to port 8000 (WebSockets included), the Twilio auth token and the stream-token key as
// Container Apps secrets, probes on /healthz and (on the internal metrics port) /readyz, at least one replica, an HTTP concurrency
// scale rule, and a termination grace period that covers the bridge's drain on SIGTERM.
//
// Replicas: each call is a POST /voice webhook, then a WebSocket, then (if the stream ends with the
// caller on the line) POST /voice/after-stream, and the ingress may send each to a different
// replica. The shared stream-token key makes that safe for the WebSocket; the model session
// pre-warmed at webhook time and the per-process call outcome used by /voice/after-stream are only
// used when the same replica gets the later request (see deploy/README.md).
//
// Deploy (see deploy/README.md):
//   az deployment group create -g <rg> -f deploy/azure/main.bicep -p deploy/azure/main.bicepparam

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@description('Azure region for every resource created here.')
param location string = resourceGroup().location

@description('Base name: the app is called this, the other resources get it as a prefix.')
@minLength(2)
@maxLength(24)
param name string = 'voice-bridge'

@description('Container image, e.g. myregistry.azurecr.io/voice-bridge:0.1.0 (pin a tag or digest, not latest).')
param image string

@description('Name of an Azure Container Registry to pull the image from with the managed identity (AcrPull is granted). Empty: the image is public.')
param containerRegistryName string = ''

@description('Resource group of that registry (default: this one).')
param containerRegistryResourceGroup string = resourceGroup().name

@description('Name of the existing Azure AI Services / AI Foundry account (Microsoft.CognitiveServices/accounts) that serves Voice Live.')
param aiAccountName string

@description('Resource group of that account (default: this one).')
param aiAccountResourceGroup string = resourceGroup().name

@description('Which upstream the bridge talks to (VOICE_BRIDGE_UPSTREAM).')
@allowed([
  'voicelive'
  'azure-openai'
  'openai'
  'local'
])
param upstream string = 'voicelive'

@description('AZURE_VOICELIVE_ENDPOINT. Empty: https://<custom subdomain of the AI account>.services.ai.azure.com')
param voiceLiveEndpoint string = ''

@description('AZURE_VOICELIVE_MODEL: the model Voice Live runs for each call.')
param voiceLiveModel string = 'gpt-realtime'

@description('Twilio auth token: stored as a Container Apps secret, given to the app as TWILIO_AUTH_TOKEN.')
@secure()
param twilioAuthToken string

@description('Twilio account SID (not a secret; used for call control, and to push the apology when the model fails, which otherwise only the replica that carried the stream can answer: set it when more than one replica may run). Empty: not set.')
param twilioAccountSid string = ''

@description('VOICE_BRIDGE_STREAM_TOKEN_KEY (>= 32 characters, e.g. `openssl rand -hex 32`): every replica must share it, or a stream whose webhook was answered by another replica is refused. Stored as a Container Apps secret.')
@secure()
@minLength(32)
param streamTokenKey string

@description('VOICE_BRIDGE_FALLBACK_NUMBER: E.164 number dialled after the apology when the model cannot be reached. Empty: hang up instead.')
param fallbackNumber string = ''

@description('VOICE_BRIDGE_PUBLIC_URL: https://host as Twilio sees it. Empty: the app\'s own https://<app>.<environment domain>. Set it when a custom domain fronts the app.')
param publicUrl string = ''

@description('VOICE_BRIDGE_DRAIN_SECONDS: after SIGTERM, how long calls in progress may continue before the bridge says goodbye and ends them. The grace period before SIGKILL is this plus 20 s.')
@minValue(0)
param drainSeconds int = 30

@description('VOICE_BRIDGE_METRICS_PORT: the internal port serving /metrics and /readyz (the public port then serves neither). Reachable inside the Container Apps environment only (an internal additional port mapping), e.g. by a Prometheus or OpenTelemetry collector app there; the readiness probe uses it.')
@minValue(1024)
@maxValue(65535)
param metricsPort int = 9090

@description('Ingress transport. The container speaks HTTP/1.1 (uvicorn); Twilio\'s WebSocket is an HTTP/1.1 Upgrade, which Container Apps passes with either value.')
@allowed([
  'http'
  'auto'
])
param ingressTransport string = 'http'

@description('Always keep at least this many replicas (>= 1: a phone call cannot wait for a cold start).')
@minValue(1)
param minReplicas int = 1

@description('Upper bound for the scale rule.')
@minValue(1)
param maxReplicas int = 10

// A Twilio call is ONE long HTTP request at the ingress: the WebSocket upgrade of /media-stream
// stays open for the whole call (the POST /voice webhook before it takes milliseconds). So
// "concurrent requests per replica" here is, to within a few webhooks, "calls per replica".
// Sized from benchmarks/load.py (BENCHMARKS.md, "Load"): one bridge process is one event loop on
// one core and stays within 10 ms p99 up to 40-50 transcoded calls (pcm24k) on a 2.5 GHz core, so
// a replica carries 40 (maxCallsPerReplica; headroom for a TLS upstream) and scaling out starts
// at 75 % of that, before a replica answers new calls "busy". More cpu per replica does not raise
// this (one core per process). With VOICE_BRIDGE_APPEND_MS=100, 50 / 40; with VOICE_BRIDGE_AUDIO=g711, 75 / 55.
@description('HTTP scale rule: concurrent requests (= calls in progress, see the comment above) per replica before another replica is added (75 % of maxCallsPerReplica).')
@minValue(1)
param concurrentRequests int = 30

@description('VOICE_BRIDGE_MAX_CALLS: calls one replica carries before /voice answers busy and /readyz reports full (40: the load benchmark\'s clean limit for one core).')
@minValue(1)
param maxCallsPerReplica int = 40

@description('vCPU per replica (Container Apps sizes: 0.25 to 4, paired with memory as 0.5 GiB per 0.25 vCPU).')
param cpu string = '1.0'

@description('Memory per replica; must match cpu (e.g. 1.0 -> 2Gi).')
param memory string = '2Gi'

@description('Log Analytics retention in days.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Derived values
// ---------------------------------------------------------------------------------------------

var containerPort = 8000
// After the drain deadline the bridge asks the remaining calls to say goodbye and gives them 15 s
// (GOODBYE_GRACE_S in bridge/app.py); 5 s more for closing sockets, lifespan shutdown and the last
// log lines. So SIGKILL comes only after the bridge has had time to exit 0 by itself.
var goodbyeSeconds = 15
var shutdownMarginSeconds = 5
var terminationGracePeriodSeconds = drainSeconds + goodbyeSeconds + shutdownMarginSeconds
var twilioSecretName = 'twilio-auth-token'
var streamTokenSecretName = 'stream-token-key'

resource aiAccount 'Microsoft.CognitiveServices/accounts@2023-05-01' existing = {
  name: aiAccountName
  scope: resourceGroup(aiAccountResourceGroup)
}

var defaultVoiceLiveEndpoint = 'https://${aiAccount.properties.customSubDomainName}.services.ai.azure.com'
var effectiveVoiceLiveEndpoint = empty(voiceLiveEndpoint) ? defaultVoiceLiveEndpoint : voiceLiveEndpoint

// ---------------------------------------------------------------------------------------------
// Logs and the Container Apps environment
// ---------------------------------------------------------------------------------------------

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource managedEnv 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${name}-env'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

var effectivePublicUrl = empty(publicUrl) ? 'https://${name}.${managedEnv.properties.defaultDomain}' : publicUrl

// ---------------------------------------------------------------------------------------------
// Identity and its role assignments
// ---------------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-id'
  location: location
  tags: tags
}

// "Cognitive Services User" on the AI account: lets DefaultAzureCredential (AZURE_CLIENT_ID below
// selects this identity) get Entra tokens that Voice Live accepts; no API key is deployed.
module aiRole 'modules/ai-account-role.bicep' = {
  name: '${name}-ai-role'
  scope: resourceGroup(aiAccountResourceGroup)
  params: {
    aiAccountName: aiAccountName
    principalId: identity.properties.principalId
  }
}

module acrPull 'modules/acr-pull-role.bicep' = if (!empty(containerRegistryName)) {
  name: '${name}-acr-pull'
  scope: resourceGroup(containerRegistryResourceGroup)
  params: {
    registryName: containerRegistryName
    principalId: identity.properties.principalId
  }
}

// ---------------------------------------------------------------------------------------------
// The container app
// ---------------------------------------------------------------------------------------------

var baseEnv = [
  {
    name: 'VOICE_BRIDGE_UPSTREAM'
    value: upstream
  }
  {
    name: 'AZURE_VOICELIVE_ENDPOINT'
    value: effectiveVoiceLiveEndpoint
  }
  {
    name: 'AZURE_VOICELIVE_MODEL'
    value: voiceLiveModel
  }
  {
    // DefaultAzureCredential -> ManagedIdentityCredential uses the user-assigned identity with this client ID.
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'VOICE_BRIDGE_PUBLIC_URL'
    value: effectivePublicUrl
  }
  {
    name: 'TWILIO_AUTH_TOKEN'
    secretRef: twilioSecretName
  }
  {
    name: 'VOICE_BRIDGE_STREAM_TOKEN_KEY'
    secretRef: streamTokenSecretName
  }
  {
    name: 'VOICE_BRIDGE_DRAIN_SECONDS'
    value: string(drainSeconds)
  }
  {
    name: 'VOICE_BRIDGE_MAX_CALLS'
    value: string(maxCallsPerReplica)
  }
  {
    name: 'VOICE_BRIDGE_LOG_FORMAT'
    value: 'json'
  }
  {
    name: 'PORT'
    value: string(containerPort)
  }
  {
    name: 'VOICE_BRIDGE_METRICS_PORT'
    value: string(metricsPort)
  }
  // FORWARDED_ALLOW_IPS is not set: VOICE_BRIDGE_PUBLIC_URL is always set above, so no forwarded
  // header decides a signature URL (the ingress's own address is not a fixed, documented range).
]

var accountSidEnv = empty(twilioAccountSid) ? [] : [
  {
    name: 'TWILIO_ACCOUNT_SID'
    value: twilioAccountSid
  }
]

var fallbackEnv = empty(fallbackNumber) ? [] : [
  {
    name: 'VOICE_BRIDGE_FALLBACK_NUMBER'
    value: fallbackNumber
  }
]

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    managedEnvironmentId: managedEnv.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: containerPort
        transport: ingressTransport
        allowInsecure: false // HTTPS only: plain HTTP is redirected, Twilio is given https:// and wss:// URLs
        // /metrics and /readyz: inside the environment only, never on the public endpoint.
        additionalPortMappings: [
          {
            external: false
            targetPort: metricsPort
          }
        ]
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      secrets: [
        {
          name: twilioSecretName
          value: twilioAuthToken
        }
        {
          name: streamTokenSecretName
          value: streamTokenKey
        }
      ]
      registries: empty(containerRegistryName) ? [] : [
        {
          server: '${containerRegistryName}${environment().suffixes.acrLoginServer}'
          identity: identity.id
        }
      ]
    }
    template: {
      // SIGTERM -> the bridge reports not-ready, answers new calls busy, lets those in progress run
      // for drainSeconds, then says goodbye (see terminationGracePeriodSeconds above).
      terminationGracePeriodSeconds: terminationGracePeriodSeconds
      containers: [
        {
          name: 'voice-bridge'
          image: image
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: concat(baseEnv, accountSidEnv, fallbackEnv)
          probes: [
            {
              // Slow starts must not count as liveness failures: up to 30 s to answer /healthz.
              // (Container Apps allows failureThreshold 1-10 and periodSeconds 1-240.)
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: containerPort
              }
              periodSeconds: 3
              timeoutSeconds: 2
              failureThreshold: 10
            }
            {
              // The process answers at all. Restarting it drops its calls, so be patient.
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: containerPort
              }
              periodSeconds: 10
              timeoutSeconds: 3
              failureThreshold: 3
            }
            {
              // Ready for new calls: started, not draining, not full (VOICE_BRIDGE_MAX_CALLS). Not ready -> no new traffic,
              // calls already connected continue.
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: metricsPort // the internal port: /readyz is not served on the public one
              }
              periodSeconds: 5
              timeoutSeconds: 3
              failureThreshold: 2
              successThreshold: 1
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'calls-in-progress'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequests)
              }
            }
          }
        ]
      }
    }
  }
  dependsOn: [
    aiRole
    acrPull
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

@description('The app\'s host name.')
output fqdn string = app.properties.configuration.ingress.fqdn

@description('What VOICE_BRIDGE_PUBLIC_URL was set to.')
output appUrl string = effectivePublicUrl

@description('Set the Twilio number\'s "A call comes in" webhook (HTTP POST) to this.')
output voiceWebhookUrl string = '${effectivePublicUrl}/voice'

@description('Client ID of the managed identity (AZURE_CLIENT_ID in the app).')
output identityClientId string = identity.properties.clientId

@description('Principal (object) ID of the managed identity, for extra role assignments.')
output identityPrincipalId string = identity.properties.principalId
