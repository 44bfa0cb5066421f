// app/build.gradle.kts (excerpt): compress the model before every build and ship the verified int8 TFLite file.
// `compress run` exits 1 when a quality gate fails: Exec then fails the build, and the report says which gate.
val compressRunDir = layout.buildDirectory.dir("compress-run")

val compressModel by tasks.registering(Exec::class) {
    group = "build"
    description = "Runs the compress recipe and verifies the int8 model in LiteRT."
    inputs.file(rootProject.file("recipes/mnist_cnn.yaml"))
    outputs.dir(compressRunDir)
    commandLine("compress", "run", rootProject.file("recipes/mnist_cnn.yaml").path, "--out", compressRunDir.get().asFile.path)
}

val copyCompressedModel by tasks.registering(Copy::class) {
    dependsOn(compressModel)
    from(compressRunDir) { include("model.int8.tflite") }
    into(layout.projectDirectory.dir("src/main/assets"))
}

tasks.named("preBuild") { dependsOn(copyCompressedModel) }
