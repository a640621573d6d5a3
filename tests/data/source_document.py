"""The examples of the Graph reference page for ``call: recordResponse`` (the source document)."""

REQUEST = {
    "bargeInAllowed": True,
    "clientContext": "d45324c1-fcb5-430a-902c-f20af696537c",
    "prompts": [
        {
            "@odata.type": "#microsoft.graph.mediaPrompt",
            "mediaInfo": {
                "uri": "https://cdn.contoso.com/beep.wav",
                "resourceId": "1D6DE2D4-CD51-4309-8DAA-70768651088E",
            },
        }
    ],
    "maxRecordDurationInSeconds": 10,
    "initialSilenceTimeoutInSeconds": 5,
    "maxSilenceTimeoutInSeconds": 2,
    "playBeep": True,
    "stopTones": ["#", "1", "*"],
}

RESPONSE_LOCATION = (
    "https://graph.microsoft.com/v1.0/communications/calls/"
    "57dab8b1-894c-409a-b240-bd8beae78896/operations/0fe0623f-d628-42ed-b4bd-8ac290072cc5"
)

RESPONSE = {
    "@odata.type": "#microsoft.graph.recordOperation",
    "id": "0fe0623f-d628-42ed-b4bd-8ac290072cc5",
    "status": "running",
    "resultInfo": None,
    "recordingLocation": None,
    "clientContext": "d45324c1-fcb5-430a-902c-f20af696537c",
}

COMPLETION_NOTIFICATION = {
    "@odata.type": "#microsoft.graph.commsNotifications",
    "value": [
        {
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "deleted",
            "resourceUrl": "/communications/calls/57DAB8B1894C409AB240BD8BEAE78896/operations/0FE0623FD62842EDB4BD8AC290072CC5",
            "resourceData": {
                "@odata.type": "#microsoft.graph.recordOperation",
                "@odata.id": "/communications/calls/57DAB8B1894C409AB240BD8BEAE78896/operations/0FE0623FD62842EDB4BD8AC290072CC5",
                "@odata.etag": 'W/"54451"',
                "id": "0fe0623f-d628-42ed-b4bd-8ac290072cc5",
                "clientContext": "d45324c1-fcb5-430a-902c-f20af696537c",
                "status": "completed",
                "resultInfo": {
                    "@odata.type": "#microsoft.graph.resultInfo",
                    "code": 200,
                    "subcode": 8515,
                    "message": "Action completed, max record duration reached.",
                },
                "recordingLocation": "https://file.location/17e3b46c-f61d-4f4d-9635-c626ef18e6ad",
                "recordingAccessToken": "<access-token>",
            },
        }
    ],
}

CALL_ID = "57dab8b1-894c-409a-b240-bd8beae78896"
OPERATION_ID = "0fe0623f-d628-42ed-b4bd-8ac290072cc5"
